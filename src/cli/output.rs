//! Aligned text tables and JSON for command output.

use serde::Serialize;
use unicode_width::UnicodeWidthStr;

/// Prints rows under a header with each column padded to its widest cell, by display
/// width: a CJK character takes two columns, a combining accent none.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c}{}", " ".repeat(w - c.width()))).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A cell for an optional value.
pub fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

/// Shortens long text for a table cell to at most `max` columns.
pub fn clip(text: &str, max: usize) -> String {
    use unicode_width::UnicodeWidthChar;
    if text.width() <= max {
        return text.to_owned();
    }
    let mut used = 1; // the ellipsis
    let kept: String = text
        .chars()
        .take_while(|c| {
            used += c.width().unwrap_or(0);
            used <= max
        })
        .collect();
    format!("{kept}…")
}

/// Shortens long text for a table cell from the start, keeping its end: for paths, whose
/// file name is what tells them apart.
pub fn clip_start(text: &str, max: usize) -> String {
    let reversed: String = text.chars().rev().collect();
    clip(&reversed, max).chars().rev().collect()
}

/// Prints "Label: value" lines with the values aligned.
pub fn fields(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(label, _)| label.width() + 1).max().unwrap_or(0);
    for (label, value) in rows {
        println!("{:<width$}  {value}", format!("{label}:"));
    }
}

/// A list cell: the items joined, or a dash.
pub fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_counts_columns() {
        assert_eq!(clip("プリンターが壊れた", 7), "プリン…");
        assert_eq!(clip("short", 7), "short");
        assert_eq!(clip("exactly7", 7), "exactl…");
        assert_eq!(clip_start("/tmp/x/fixtures/03-multipart.eml", 20), "…es/03-multipart.eml");
    }
}
