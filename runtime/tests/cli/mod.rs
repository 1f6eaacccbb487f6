//! Tests of the `pretrain` subcommands.

mod abuse;
mod inspect;
mod launch;
mod output;
mod preprocess;
mod signals;
mod train;
