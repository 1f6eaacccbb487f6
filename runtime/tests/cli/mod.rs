//! Tests of the `pretrain` subcommands.

mod inspect;
mod preprocess;
mod signals;
mod train;
