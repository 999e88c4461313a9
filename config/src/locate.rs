//! Where each field of a YAML document is: path (`apps[0].targets[1].cluster`) → line, column.
//!
//! serde reports type errors with a location, but rules checked after deserialisation only know
//! the path of the field they reject; this index turns that path back into a place in the file.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Default)]
pub(crate) struct Locations {
    by_path: HashMap<String, (usize, usize)>,
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, next: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    by_path: HashMap<String, (usize, usize)>,
}

impl Builder {
    /// The path of a value starting now, if it is in value position.
    fn value_path(&mut self) -> Option<String> {
        match self.stack.last_mut()? {
            Frame::Mapping { path, key } => key.take().map(|k| join(path, &k)),
            Frame::Sequence { path, next } => {
                *next += 1;
                Some(format!("{path}[{}]", *next - 1))
            }
        }
    }

    fn record(&mut self, path: &str, mark: Marker) {
        // yaml-rust2 columns are 0-based; editors and serde's locations are 1-based.
        self.by_path
            .entry(path.to_string())
            .or_insert((mark.line(), mark.col() + 1));
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => {
                // A scalar in key position names the next value.
                if let Some(Frame::Mapping {
                    key: key @ None,
                    path,
                }) = self.stack.last_mut()
                {
                    let path = join(path, &value);
                    *key = Some(value);
                    self.record(&path, mark);
                } else if let Some(path) = self.value_path() {
                    self.by_path.insert(path, (mark.line(), mark.col() + 1));
                }
            }
            Event::Alias(_) => {
                self.value_path();
            }
            Event::MappingStart(..) => {
                let path = self.value_path().unwrap_or_default();
                self.record(&path, mark);
                self.stack.push(Frame::Mapping { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.value_path().unwrap_or_default();
                self.record(&path, mark);
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl Locations {
    /// Indexes `text`; a document that does not parse yields an empty index (serde reports why).
    pub(crate) fn index(text: &str) -> Self {
        let mut builder = Builder::default();
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        Locations {
            by_path: builder.by_path,
        }
    }

    /// The line and column of `path`, or of its nearest ancestor that is in the file.
    pub(crate) fn find(&self, path: &str) -> (Option<usize>, Option<usize>) {
        let mut path = path;
        loop {
            if let Some((line, column)) = self.by_path.get(path) {
                return (Some(*line), Some(*column));
            }
            match path.rfind(['.', '[']) {
                Some(pos) => path = &path[..pos],
                None => return (None, None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_lines() {
        let text = "apps:\n  - name: a\n    targets:\n      - cluster: x\n        weight: 5\n      - {cluster: y, weight: 7}\nzones: []\n";
        let locations = Locations::index(text);
        assert_eq!(locations.find("apps[0].name"), (Some(2), Some(11)));
        assert_eq!(
            locations.find("apps[0].targets[0].weight"),
            (Some(5), Some(17))
        );
        assert_eq!(
            locations.find("apps[0].targets[1].weight"),
            (Some(6), Some(30))
        );
        assert_eq!(locations.find("zones"), (Some(7), Some(1)));
        // A missing field falls back to its parent.
        assert_eq!(locations.find("apps[0].targets[1].tier").0, Some(6));
        assert_eq!(locations.find("nothing"), (None, None));
    }
}
