//! `postdesk migrate-db --from sqlite:PATH --to postgres://…`: a helpdesk moves from the
//! embedded SQLite file to a PostgreSQL server with all its history.

use std::path::PathBuf;
use std::process::ExitCode;

use super::output::table;
use super::UsageError;
use crate::config::{postgres_target, Config, Database};
use crate::store::copy::{self, CopyError};
use crate::store::Store;

pub fn run(config: &Config, from: &str, to: &str) -> anyhow::Result<ExitCode> {
    let Some(path) = from.strip_prefix("sqlite:").map(PathBuf::from) else {
        return Err(UsageError(format!("--from must be sqlite:PATH (the SQLite file), not {from:?}")).into());
    };
    let target = postgres_target(to, &config.database).map_err(|e| UsageError(format!("--to: {e}")))?;
    let mut source = Store::open_existing(&path)?;
    let mut target_store = Store::create(&Database::Postgres(target))?;
    let copied = match copy::sqlite_to_postgres(&mut source, &mut target_store) {
        Ok(copied) => copied,
        Err(e @ (CopyError::NotEmpty(_) | CopyError::Backends)) => return Err(UsageError(e.to_string()).into()),
        Err(e) => return Err(e.into()),
    };
    let rows: Vec<Vec<String>> = copied.iter().map(|c| vec![c.table.to_owned(), c.rows.to_string()]).collect();
    table(&["TABLE", "ROWS"], &rows);
    let total: i64 = copied.iter().map(|c| c.rows).sum();
    println!(
        "Copied {total} rows from {} to {to}; every table has as many rows in both. Point [database] url at it \
         (and remove path) to use it.",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
