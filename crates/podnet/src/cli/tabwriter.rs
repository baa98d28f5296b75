//! Go's `text/tabwriter` as kubectl configures it (`minwidth 0, tabwidth 8, padding 2,
//! padchar ' ', flags 0`): text whose cells end in `\t` is aligned in columns; a column block
//! is a run of consecutive lines that have a cell in that column, so a line without tabs ends
//! every block. `kubectl describe` writes all its output through one of these.

const PADDING: usize = 2;

/// Collects text and aligns it on [`TabWriter::flush`].
#[derive(Default)]
pub struct TabWriter {
    /// Finished output.
    out: String,
    /// Lines not yet aligned, each split at its tabs (the last cell is the line's rest).
    lines: Vec<Vec<String>>,
    /// The current, unterminated line.
    partial: String,
}

impl TabWriter {
    pub fn new() -> TabWriter {
        TabWriter::default()
    }

    /// Appends text; lines end at `\n`.
    pub fn write(&mut self, text: &str) {
        let mut rest = text;
        while let Some(at) = rest.find('\n') {
            self.partial.push_str(&rest[..at]);
            let line = std::mem::take(&mut self.partial);
            self.lines
                .push(line.split('\t').map(str::to_owned).collect());
            rest = &rest[at + 1..];
        }
        self.partial.push_str(rest);
    }

    /// Aligns what was written so far; later text starts new column blocks.
    pub fn flush(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.lines
                .push(line.split('\t').map(str::to_owned).collect());
            // An unterminated last line is written without its newline.
            let lines = std::mem::take(&mut self.lines);
            let mut text = String::new();
            format(&lines, 0, lines.len(), &mut Vec::new(), &mut text);
            if text.ends_with('\n') {
                text.pop();
            }
            self.out.push_str(&text);
            return;
        }
        let lines = std::mem::take(&mut self.lines);
        format(&lines, 0, lines.len(), &mut Vec::new(), &mut self.out);
    }

    /// Flushes and returns everything written.
    pub fn finish(mut self) -> String {
        self.flush();
        self.out
    }
}

/// Go's `Writer.format`: lays out `lines[line0..line1]`, whose columns left of
/// `widths.len()` have the given widths.
fn format(
    lines: &[Vec<String>],
    mut line0: usize,
    line1: usize,
    widths: &mut Vec<usize>,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        // A cell in this column: print the lines before it, then find the block's extent.
        write_lines(lines, line0, this, widths, out);
        line0 = this;
        let mut width = 0;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(cell_width(&lines[this][column]) + PADDING);
            this += 1;
        }
        widths.push(width);
        format(lines, line0, this, widths, out);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, line0, line1, widths, out);
}

fn write_lines(lines: &[Vec<String>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for line in &lines[from..to] {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if j + 1 < line.len()
                && let Some(&w) = widths.get(j)
            {
                let pad = w.saturating_sub(cell_width(cell));
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
}

fn cell_width(cell: &str) -> usize {
    cell.chars().count()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tab(text: &str) -> String {
        let mut w = TabWriter::new();
        w.write(text);
        w.finish()
    }

    #[test]
    fn blocks_end_at_lines_without_tabs() {
        let text = "Name:\tweb-0\nNamespace:\tshop\nContainers:\n  main:\n    Image:\tbusybox\n    Restart Count:\t0\nEvents:\t<none>\n";
        assert_eq!(
            tab(text),
            "Name:       web-0\nNamespace:  shop\nContainers:\n  main:\n    Image:          busybox\n    Restart Count:  0\nEvents:             <none>\n"
        );
    }

    #[test]
    fn nested_columns_align_within_their_block() {
        let text = "Port:\thttp\t80/TCP\nTargetPort:\thttp/TCP\nSession Affinity:\tNone\n";
        assert_eq!(
            tab(text),
            "Port:              http  80/TCP\nTargetPort:        http/TCP\nSession Affinity:  None\n"
        );
    }

    #[test]
    fn conditions_like_kubectl() {
        let text = "Conditions:\n  Type\tStatus\n  Ready \tTrue \n  ContainersReady \tTrue \nVolumes:\t<none>\n";
        assert_eq!(
            tab(text),
            "Conditions:\n  Type              Status\n  Ready             True \n  ContainersReady   True \nVolumes:            <none>\n"
        );
    }
}
