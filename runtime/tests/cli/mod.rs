//! Tests of the `pretrain` subcommands.

mod inspect;
mod launch;
mod preprocess;
mod signals;
mod train;
