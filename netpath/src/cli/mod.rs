//! The `netpath` binary's own modules (not part of the library): its grammar ([`args`],
//! with [`family`] for the dual-stack flags), how it selects
//! objects ([`select`]: filters), prints them ([`print`]), and the commands that are more
//! than one API call ([`ops`]: listings, several removals, `inspect`, offline `stats`).

pub mod args;
pub mod family;
pub mod ops;
pub mod print;
pub mod select;
pub mod top;
