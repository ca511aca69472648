//! The `netpath` binary's own modules (not part of the library): how the CLI selects
//! objects ([`select`]: filters), prints them ([`print`]), and the commands that are more
//! than one API call ([`ops`]: listings, several removals, `inspect`, offline `stats`).

pub mod ops;
pub mod print;
pub mod select;
