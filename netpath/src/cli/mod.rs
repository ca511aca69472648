//! The `netpath` binary's own modules (not part of the library): how the CLI selects
//! objects ([`select`]: filters, `-q`, `inspect`) and prints them ([`print`]).

pub mod print;
pub mod select;
