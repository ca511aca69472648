//! The `netpath` binary's own modules (not part of the library): its grammar ([`args`]), how it selects
//! objects ([`select`]: filters), prints them ([`print`]), and the commands that are more
//! than one API call ([`ops`]: listings, several removals, `inspect`, offline `stats`).

pub mod args;
pub mod ops;
pub mod print;
pub mod select;
