//! Text tables for the operator commands: each column as wide as its widest cell, so long
//! cluster names or large numbers never push a row out of line with its header.

/// How a column's cells sit in its width.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Names and words.
    Left,
    /// Numbers, so their digits line up.
    Right,
    /// A change, `BEFORE → AFTER`: both sides right-aligned, so the arrows line up.
    Change,
}

const ARROW: &str = " → ";

/// A table built row by row and rendered once every width is known.
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// One row; missing cells are empty, extra cells are a programming error.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert!(cells.len() <= self.columns.len(), "more cells than columns");
        self.rows.push(cells);
    }

    /// The header and rows, each line starting with `indent`; the last column is not padded
    /// (no trailing spaces).
    pub fn render(&self, indent: &str) -> String {
        let width = |s: &str| s.chars().count();
        // A change column's cells are first rebuilt with both sides padded to their widest.
        let sides: Vec<(usize, usize)> = (0..self.columns.len())
            .map(|i| self.change_widths(i))
            .collect();
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(i, cell)| match self.columns.get(i) {
                        Some((_, Align::Change)) => {
                            let (before, after) = sides[i];
                            match cell.split_once(ARROW) {
                                Some((b, a)) => format!("{b:>before$}{ARROW}{a:>after$}"),
                                None => cell.clone(),
                            }
                        }
                        _ => cell.clone(),
                    })
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (header, _))| {
                cells
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| width(c))
                    .chain([width(header)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_string()).collect();
        for cells in std::iter::once(&header).chain(&cells) {
            let mut line = String::from(indent);
            for (i, ((_, align), w)) in self.columns.iter().zip(&widths).enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                let pad = " ".repeat(w - width(cell));
                if i > 0 {
                    line.push_str("  ");
                }
                match align {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right | Align::Change => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

impl Table {
    /// The widest before and after sides of change column `i`.
    fn change_widths(&self, i: usize) -> (usize, usize) {
        self.rows
            .iter()
            .filter_map(|r| r.get(i)?.split_once(ARROW))
            .fold((0, 0), |(b, a), (before, after)| {
                (b.max(before.chars().count()), a.max(after.chars().count()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_column_starts_at_the_same_place_on_every_line() {
        let mut t = Table::new(&[("CLUSTER", Align::Left), ("WEIGHT NOW→AFTER", Align::Right)]);
        t.row(vec![
            "a-very-long-cluster-name-indeed".into(),
            "33.3% → 0.0%".into(),
        ]);
        t.row(vec!["b".into(), "100.0% → 50.0%".into()]);
        let text = t.render("  ");
        let lines: Vec<&str> = text.lines().collect();
        // The second column ends at the same character on every line (right-aligned).
        let ends: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(ends.iter().all(|&e| e == ends[0]), "{text}");
        assert!(
            lines[1].starts_with("  a-very-long-cluster-name-indeed  "),
            "{text}"
        );
        assert!(lines[2].starts_with("  b "), "{text}");
    }

    #[test]
    fn the_arrows_of_a_change_column_line_up() {
        let mut t = Table::new(&[("C", Align::Left), ("WEIGHT NOW→AFTER", Align::Change)]);
        t.row(vec!["a".into(), "40.0% → 50.0%".into()]);
        t.row(vec!["b".into(), "20.0% → 0.0%".into()]);
        t.row(vec!["c".into(), "-".into()]);
        let text = t.render("");
        let arrows: Vec<usize> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.chars().position(|c| c == '→'))
            .collect();
        assert_eq!(arrows.len(), 2, "{text}");
        assert_eq!(arrows[0], arrows[1], "{text}");
        let ends: Vec<usize> = text.lines().map(|l| l.chars().count()).collect();
        assert!(ends.iter().all(|&e| e == ends[0]), "{text}");
    }

    #[test]
    fn no_trailing_spaces_after_a_short_last_cell() {
        let mut t = Table::new(&[("A", Align::Left), ("VOTES", Align::Left)]);
        t.row(vec!["x".into(), String::new()]);
        for line in t.render("").lines() {
            assert_eq!(line, line.trim_end());
        }
    }
}
