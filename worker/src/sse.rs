//! A small server-sent-events parser: feed it bytes, take complete events out.

/// One event as the gateway sends it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Adds bytes and returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data || self.current.event.is_some() {
                    events.push(std::mem::take(&mut self.current));
                } else {
                    self.current = SseEvent::default();
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue; // a comment: the keep-alive
            }
            let (field, value) = line
                .split_once(':')
                .map_or((line, ""), |(field, value)| (field, value.strip_prefix(' ').unwrap_or(value)));
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"id: 5-0\nevent: TASK:ASSIGNED\nda").is_empty());
        let events = parser.feed(b"ta: {\"a\":1}\n\n: keep-alive\n\nid: 6-0\r\ndata: x\r\ndata: y\r\n\r\n");
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0],
            SseEvent { id: Some("5-0".into()), event: Some("TASK:ASSIGNED".into()), data: "{\"a\":1}".into() }
        );
        assert_eq!(events[1].data, "x\ny");
    }
}
