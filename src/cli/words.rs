//! The command line's words for what the service layer refused: its sentence, and for
//! some refusals what to type instead. A storage failure stays itself, so that its exit
//! status (75 when it may pass) is chosen by what it is.

use crate::desk::error::DeskError;

/// `DeskError` as the one line `postdesk` prints.
pub fn said(e: DeskError) -> anyhow::Error {
    let hint = match &e {
        DeskError::AddressTaken { .. } => {
            " (an address belongs to one customer; to join two customers use `postdesk customers merge`)"
        }
        DeskError::NameTaken { .. } => " (to join two organisations, use `postdesk orgs merge`)",
        DeskError::FreeMailDomain { .. } => " (use --force if this organisation really owns it)",
        _ => "",
    };
    match e {
        DeskError::Store(e) => e.into(),
        e => anyhow::anyhow!("{e}{hint}"),
    }
}

/// `said` for an edit command, which names the options it takes when none was given.
pub fn said_editing(e: DeskError, options: &str) -> anyhow::Error {
    match e {
        DeskError::NothingToChange => anyhow::anyhow!("{e}: give {options}"),
        e => said(e),
    }
}
