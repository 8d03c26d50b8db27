//! The one way the store speaks SQL, the same for SQLite and PostgreSQL: a statement is
//! written once, with SQLite's `?N` (or `?`) placeholders, its values are `Value`s and
//! its columns are read as `Column`s. Each backend turns them into its own types here, so
//! no query needs to know which database it runs on except where the two dialects
//! differ (`Tx::dialect`).

use std::cell::RefCell;

use super::pg::PgConn;
use super::StoreError;

/// Which SQL a statement may use where the two differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A transaction, or one message's savepoint inside a batch: what every query of the
/// store runs in. Its connection is visible only inside `store`, so that nothing else
/// speaks SQL.
#[derive(Clone, Copy)]
pub struct Tx<'a> {
    pub(super) conn: Conn<'a>,
}

#[derive(Clone, Copy)]
pub(super) enum Conn<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(&'a RefCell<PgConn>),
}

/// A value bound to a placeholder, borrowed from where it is kept.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// What can be bound to a placeholder.
pub trait ToValue {
    fn to_value(&self) -> Value<'_>;
}

macro_rules! int_values {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value<'_> {
                // Counts, ids and sizes: none comes near i64::MAX.
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_values!(i64, i32, u32, u64, usize);

impl ToValue for bool {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for f64 {
    fn to_value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl ToValue for Value<'_> {
    fn to_value(&self) -> Value<'_> {
        *self
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}
impl<T: ToValue + ?Sized> ToValue for Box<T> {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}

/// The values of a statement's placeholders, in order.
pub trait Params {
    fn values(&self) -> Vec<Value<'_>>;
}

impl Params for () {
    fn values(&self) -> Vec<Value<'_>> {
        Vec::new()
    }
}
impl<T: ToValue, const N: usize> Params for [T; N] {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(ToValue::to_value).collect()
    }
}
impl<T: ToValue> Params for [T] {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(ToValue::to_value).collect()
    }
}
impl<T: ToValue> Params for Vec<T> {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(ToValue::to_value).collect()
    }
}
impl<P: Params + ?Sized> Params for &P {
    fn values(&self) -> Vec<Value<'_>> {
        (**self).values()
    }
}

/// Values of different types for one statement: `params![id, name, now]`.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        &[$(&$value as &dyn $crate::store::sql::ToValue),*][..]
    };
}
pub(crate) use params;

/// One row of a result, read column by column.
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl Row<'_> {
    pub fn get<T: Column>(&self, idx: usize) -> Result<T, StoreError> {
        match self {
            Row::Sqlite(r) => T::from_sqlite(r, idx).map_err(StoreError::from),
            Row::Postgres(r) => T::from_postgres(r, idx),
        }
    }
}

/// A column whose text is not what this build can read (written by a newer one, or by
/// hand): an error, never some other value.
pub fn invalid(idx: usize, problem: impl std::fmt::Display) -> StoreError {
    StoreError::Sql(format!("column {idx}: {problem}"))
}

/// A type a column is read as. Integers are read from any integer column, so that
/// SQLite's INTEGER and PostgreSQL's BIGINT (or a COUNT) read the same.
pub trait Column: Sized {
    fn from_sqlite(row: &rusqlite::Row, idx: usize) -> rusqlite::Result<Self>;
    fn from_postgres(row: &postgres::Row, idx: usize) -> Result<Self, StoreError>;
}

fn pg_get<'r, T: postgres::types::FromSql<'r>>(row: &'r postgres::Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx).map_err(|e| StoreError::Sql(format!("column {idx}: {e}")))
}

/// A PostgreSQL integer of any width, or a boolean, as i64.
fn pg_int(row: &postgres::Row, idx: usize) -> Result<i64, StoreError> {
    use postgres::types::Type;
    let ty = row.columns().get(idx).map(|c| c.type_().clone());
    match ty {
        Some(Type::INT2) => pg_get::<i16>(row, idx).map(i64::from),
        Some(Type::INT4) => pg_get::<i32>(row, idx).map(i64::from),
        Some(Type::BOOL) => pg_get::<bool>(row, idx).map(i64::from),
        Some(Type::NUMERIC) => Err(StoreError::Sql(format!("column {idx} is NUMERIC: cast it to BIGINT"))),
        _ => pg_get::<i64>(row, idx),
    }
}

macro_rules! int_columns {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn from_sqlite(row: &rusqlite::Row, idx: usize) -> rusqlite::Result<Self> {
                let v: i64 = row.get(idx)?;
                <$t>::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, v))
            }
            fn from_postgres(row: &postgres::Row, idx: usize) -> Result<Self, StoreError> {
                let v = pg_int(row, idx)?;
                <$t>::try_from(v).map_err(|_| StoreError::Sql(format!("column {idx}: {v} out of range")))
            }
        }
    )*};
}
int_columns!(i64, i32, u32, u64, usize);

impl Column for bool {
    fn from_sqlite(row: &rusqlite::Row, idx: usize) -> rusqlite::Result<Self> {
        row.get(idx)
    }
    fn from_postgres(row: &postgres::Row, idx: usize) -> Result<Self, StoreError> {
        Ok(pg_int(row, idx)? != 0)
    }
}

impl Column for f64 {
    fn from_sqlite(row: &rusqlite::Row, idx: usize) -> rusqlite::Result<Self> {
        row.get(idx)
    }
    fn from_postgres(row: &postgres::Row, idx: usize) -> Result<Self, StoreError> {
        match row.columns().get(idx).map(|c| c.type_().clone()) {
            Some(postgres::types::Type::FLOAT8) => pg_get(row, idx),
            Some(postgres::types::Type::FLOAT4) => pg_get::<f32>(row, idx).map(f64::from),
            _ => pg_int(row, idx).map(|v| v as f64),
        }
    }
}

impl Column for String {
    fn from_sqlite(row: &rusqlite::Row, idx: usize) -> rusqlite::Result<Self> {
        row.get(idx)
    }
    fn from_postgres(row: &postgres::Row, idx: usize) -> Result<Self, StoreError> {
        pg_get(row, idx)
    }
}

impl Column for Vec<u8> {
    fn from_sqlite(row: &rusqlite::Row, idx: usize) -> rusqlite::Result<Self> {
        row.get(idx)
    }
    fn from_postgres(row: &postgres::Row, idx: usize) -> Result<Self, StoreError> {
        pg_get(row, idx)
    }
}

impl<T: Column> Column for Option<T> {
    fn from_sqlite(row: &rusqlite::Row, idx: usize) -> rusqlite::Result<Self> {
        match row.get_ref(idx)? {
            rusqlite::types::ValueRef::Null => Ok(None),
            _ => T::from_sqlite(row, idx).map(Some),
        }
    }
    fn from_postgres(row: &postgres::Row, idx: usize) -> Result<Self, StoreError> {
        match pg_get::<IsNull>(row, idx)?.0 {
            true => Ok(None),
            false => T::from_postgres(row, idx).map(Some),
        }
    }
}

/// Whether a PostgreSQL column is NULL, whatever its type.
struct IsNull(bool);

impl<'a> postgres::types::FromSql<'a> for IsNull {
    fn from_sql(_: &postgres::types::Type, _: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull(false))
    }
    fn from_sql_null(_: &postgres::types::Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull(true))
    }
    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(v),
            Value::Real(v) => ValueRef::Real(v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

/// A value is written as the type PostgreSQL expects of its placeholder: an integer
/// into INT4 or BOOL as well as BIGINT, so statements need no casts for it. Any other
/// pairing is refused, never written as bytes of the wrong type.
impl postgres::types::ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        let text = matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN);
        match (*self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (Value::Int(v), &Type::INT4) => i32::try_from(v)?.to_sql(ty, out),
            (Value::Int(v), &Type::INT2) => i16::try_from(v)?.to_sql(ty, out),
            (Value::Int(v), &Type::BOOL) => (v != 0).to_sql(ty, out),
            (Value::Int(v), &Type::FLOAT8) => (v as f64).to_sql(ty, out),
            (Value::Int(v), _) if text => v.to_string().as_str().to_sql(ty, out),
            (Value::Real(v), &Type::FLOAT8) => v.to_sql(ty, out),
            (Value::Real(v), &Type::FLOAT4) => (v as f32).to_sql(ty, out),
            // PostgreSQL's text cannot hold NUL, which hostile mail puts in bodies and
            // headers: it is stored as U+FFFD, the character for what cannot be shown.
            (Value::Text(v), _) if text && v.contains('\0') => v.replace('\0', "\u{FFFD}").as_str().to_sql(ty, out),
            (Value::Text(v), _) if text => v.to_sql(ty, out),
            (Value::Blob(v), &Type::BYTEA) => v.to_sql(ty, out),
            (value, _) => Err(format!("a {} value cannot be written where {ty} is expected", value.kind()).into()),
        }
    }
    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }
    postgres::types::to_sql_checked!();
}

impl Value<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
        }
    }
}

/// A statement in PostgreSQL's placeholders: `?N` becomes `$N` and a bare `?` the next
/// number, as SQLite numbers them; string literals and quoted names are left alone.
pub fn postgres_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let (mut next, mut quote) = (1, None);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\'' | '"', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            ('?', None) => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n: usize = digits.parse().unwrap_or(next);
                next = n + 1;
                out.push('$');
                out.push_str(&n.to_string());
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// The placeholder numbers a statement uses, each once per use, in order.
pub fn placeholder_numbers(sql: &str) -> Vec<usize> {
    postgres_placeholders(sql)
        .split('$')
        .skip(1)
        .filter_map(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

/// How many values a statement takes: its highest placeholder number.
pub fn placeholder_count(sql: &str) -> usize {
    placeholder_numbers(sql).into_iter().max().unwrap_or(0)
}

impl<'a> Tx<'a> {
    #[cfg(test)]
    pub(super) fn sqlite(conn: &'a rusqlite::Connection) -> Tx<'a> {
        Tx { conn: Conn::Sqlite(conn) }
    }

    pub fn dialect(&self) -> Dialect {
        match self.conn {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs a statement; how many rows it changed.
    pub fn execute<P: Params + ?Sized>(&self, sql: &str, params: &P) -> Result<usize, StoreError> {
        let values = params.values();
        match self.conn {
            Conn::Sqlite(c) => Ok(c.prepare_cached(sql)?.execute(rusqlite::params_from_iter(values))?),
            Conn::Postgres(c) => c.borrow_mut().execute(sql, &values),
        }
    }

    /// Every row of a query, each read by `f`.
    pub fn query_all<T, P: Params + ?Sized>(
        &self,
        sql: &str,
        params: &P,
        mut f: impl FnMut(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let values = params.values();
        match self.conn {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
                let mut all = Vec::new();
                while let Some(r) = rows.next()? {
                    all.push(f(&Row::Sqlite(r))?);
                }
                Ok(all)
            }
            Conn::Postgres(c) => {
                let rows = c.borrow_mut().query(sql, &values)?;
                rows.iter().map(|r| f(&Row::Postgres(r))).collect()
            }
        }
    }

    /// The first row of a query, if there is one.
    pub fn query_opt<T, P: Params + ?Sized>(
        &self,
        sql: &str,
        params: &P,
        f: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let values = params.values();
        match self.conn {
            Conn::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
                rows.next()?.map(|r| f(&Row::Sqlite(r))).transpose()
            }
            Conn::Postgres(c) => {
                let rows = c.borrow_mut().query(sql, &values)?;
                rows.first().map(|r| f(&Row::Postgres(r))).transpose()
            }
        }
    }

    /// The first row of a query that always returns one (a count, `RETURNING`).
    pub fn query_row<T, P: Params + ?Sized>(
        &self,
        sql: &str,
        params: &P,
        f: impl FnOnce(&Row) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.query_opt(sql, params, f)?.ok_or_else(|| StoreError::Sql(format!("no row from {}", first_line(sql))))
    }

    /// Runs statements without values, one after another.
    pub fn execute_batch(&self, sql: &str) -> Result<(), StoreError> {
        match self.conn {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(c) => c.borrow_mut().batch_execute(sql),
        }
    }
}

/// A statement by its first line, for messages (no values are in it).
pub fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_postgres_numbers() {
        assert_eq!(postgres_placeholders("a = ?1 AND b = ?2 OR c = ?1"), "a = $1 AND b = $2 OR c = $1");
        assert_eq!(postgres_placeholders("a = ? AND b IN (?, ?)"), "a = $1 AND b IN ($2, $3)");
        assert_eq!(postgres_placeholders("x = ?3 AND y = ?"), "x = $3 AND y = $4");
        assert_eq!(postgres_placeholders("note = 'why?' AND \"a?\" = ?"), "note = 'why?' AND \"a?\" = $1");
        assert_eq!(placeholder_count("SELECT ?2, ?1"), 2);
        assert_eq!(placeholder_count("SELECT 1"), 0);
    }
}
