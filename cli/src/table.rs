//! Plain aligned tables, coloured only when the terminal allows it.

use ferry::model::State;

/// How output may look: colour only on a terminal and never with `NO_COLOR`; a live
/// progress line only on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Term {
    pub color: bool,
    pub live: bool,
}

impl Term {
    pub fn detect(is_terminal: bool, no_color: bool) -> Term {
        Term { color: is_terminal && !no_color, live: is_terminal }
    }

    /// `text` in the colour its state stands for.
    pub fn state(&self, state: State) -> String {
        let code = match state {
            State::Succeeded | State::RolledBack => "32",
            State::Failed | State::RollbackFailed => "31",
            State::Pending
            | State::Held
            | State::AwaitingApproval
            | State::InProgress
            | State::Verifying
            | State::RollingBack => "33",
            State::Superseded | State::Skipped | State::Rejected => "2",
        };
        self.paint(code, state.as_str())
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }
}

/// Renders rows under a header, each column as wide as its widest cell (ANSI codes do
/// not count), separated by two spaces, without trailing spaces.
pub(crate) fn render(term: Term, header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| visible(s).chars().count();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(widths[i] - width(cell) + 2));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| term.bold(h)).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn visible(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert_eq!(Term::detect(true, false), Term { color: true, live: true });
        assert_eq!(Term::detect(true, true), Term { color: false, live: true });
        assert_eq!(Term::detect(false, false), Term { color: false, live: false });
        assert_eq!(Term::default().state(State::Failed), "FAILED");
        assert_eq!(Term::detect(true, false).state(State::Failed), "\x1b[31mFAILED\x1b[0m");
    }

    #[test]
    fn columns_align_on_what_is_visible() {
        let rows = vec![
            vec!["a".to_string(), Term::detect(true, false).state(State::Succeeded), "x".into()],
            vec!["long-name".to_string(), "FAILED".into(), String::new()],
        ];
        let plain = visible(&render(Term::default(), &["NAME", "STATE", "NOTE"], &rows));
        assert_eq!(plain, "NAME       STATE      NOTE\na          SUCCEEDED  x\nlong-name  FAILED\n");
    }
}
