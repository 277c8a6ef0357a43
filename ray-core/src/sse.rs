//! Server-Sent Events in: an incremental decoder fed bytes as they arrive, following the
//! `text/event-stream` rules of the HTML standard. Synchronous and I/O-free, so the gateway's
//! backend adapters and the SDK share it, and it is property-tested for any chunking.
//!
//! ```
//! use ray_core::sse::SseDecoder;
//!
//! let mut decoder = SseDecoder::new(1 << 20);
//! decoder.feed(b"event: delta\ndata: {\"text\":\"Hel").unwrap();
//! assert_eq!(decoder.next_event().unwrap(), None, "the event has not ended yet");
//! decoder.feed(b"lo\"}\n\n").unwrap();
//! let event = decoder.next_event().unwrap().unwrap();
//! assert_eq!(event.event.as_deref(), Some("delta"));
//! assert_eq!(event.data, r#"{"text":"Hello"}"#);
//! ```

/// One event: its `event:` name, if any, and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, when the event had one.
    pub event: Option<String>,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

/// An event grew past the limit before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLarge {
    /// The limit, in bytes.
    pub limit: usize,
}

impl std::fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an event is larger than {} bytes", self.limit)
    }
}

impl std::error::Error for EventTooLarge {}

/// The incremental decoder (the `text/event-stream` rules of the HTML standard: lines end
/// with LF, CRLF or CR; a blank line dispatches; `:` starts a comment; an event without data is
/// not dispatched; an unterminated event at the end of the stream is dropped).
#[derive(Debug)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
    /// Bytes of `buf` known to hold no line ending past `start` (so a long line is scanned
    /// once, not once per chunk).
    scanned: usize,
    data: String,
    has_data: bool,
    event: Option<String>,
    limit: usize,
    /// The previous line ended with CR: an LF right after it belongs to that line ending.
    after_cr: bool,
}

impl SseDecoder {
    /// A decoder that refuses events larger than `limit` bytes.
    pub fn new(limit: usize) -> SseDecoder {
        SseDecoder {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            data: String::new(),
            has_data: false,
            event: None,
            limit,
            after_cr: false,
        }
    }

    /// Appends bytes that arrived. Refuses them when the event they continue could only end
    /// past the limit.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), EventTooLarge> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        let unscanned = &self.buf[self.scanned..];
        if !unscanned.contains(&b'\n') && !unscanned.contains(&b'\r') {
            self.scanned = self.buf.len();
            if self.buf.len() - self.start + self.data.len() > self.limit {
                return Err(EventTooLarge { limit: self.limit });
            }
        }
        Ok(())
    }

    /// The next complete event, if the bytes so far hold one.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, EventTooLarge> {
        loop {
            if self.after_cr && self.start < self.buf.len() {
                if self.buf[self.start] == b'\n' {
                    self.start += 1;
                }
                self.after_cr = false;
            }
            let from = self.scanned.max(self.start);
            let Some(found) = self.buf[from..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
            else {
                self.scanned = self.buf.len();
                return Ok(None);
            };
            let end = from - self.start + found;
            self.after_cr = self.buf[self.start + end] == b'\r';
            let line_start = self.start;
            self.start += end + 1;
            self.scanned = self.start;
            if end == 0 {
                if let Some(event) = self.dispatch() {
                    return Ok(Some(event));
                }
                continue;
            }
            let line = &self.buf[line_start..line_start + end];
            if line[0] == b':' {
                continue;
            }
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &line[..0]),
            };
            match field {
                b"data" => {
                    if self.data.len() + value.len() + 1 > self.limit {
                        return Err(EventTooLarge { limit: self.limit });
                    }
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(&String::from_utf8_lossy(value));
                    self.has_data = true;
                }
                b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
                _ => {}
            }
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode_all(input: &[u8], chunks: &[usize]) -> Result<Vec<SseEvent>, EventTooLarge> {
        let mut decoder = SseDecoder::new(1 << 20);
        let mut events = Vec::new();
        let mut at = 0;
        for &size in chunks {
            let end = (at + size).min(input.len());
            decoder.feed(&input[at..end])?;
            while let Some(event) = decoder.next_event()? {
                events.push(event);
            }
            at = end;
        }
        decoder.feed(&input[at..])?;
        while let Some(event) = decoder.next_event()? {
            events.push(event);
        }
        Ok(events)
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn reads_llama_cpp_and_openai_streams() {
        let sample =
            include_str!("../../tools/llama-fixture/samples/completion_native_stream.sse.txt");
        let body = sample.split("\n--- HTTP").next().unwrap();
        let events = decode_all(body.as_bytes(), &[]).unwrap();
        assert!(events.len() >= 2, "{events:?}");
        assert!(events.last().unwrap().data.contains(r#""stop":true"#));
        let openai = b"data: {\"a\":1}\n\n: keep-alive\n\nevent: done\ndata: [DONE]\n\n";
        let events = decode_all(openai, &[]).unwrap();
        assert_eq!(data(&events), [r#"{"a":1}"#, "[DONE]"]);
        assert_eq!(events[1].event.as_deref(), Some("done"));
    }

    #[test]
    fn follows_the_line_rules() {
        let input =
            b"data:no space\r\n\r\ndata: two\rdata:  lines\r\rid: 3\n\ndata\n\n:c\ndata: last";
        let events = decode_all(input, &[]).unwrap();
        // No data field: no event. A bare `data` is an empty data line. The last event never
        // ended, so it is not dispatched.
        assert_eq!(data(&events), ["no space", "two\n lines", ""]);
    }

    #[test]
    fn an_overlong_event_is_refused() {
        let mut decoder = SseDecoder::new(16);
        decoder.feed(b"data: 0123456789\n").unwrap();
        assert_eq!(decoder.next_event(), Ok(None));
        decoder.feed(b"data: 0123456789\n\n").unwrap();
        assert_eq!(decoder.next_event(), Err(EventTooLarge { limit: 16 }));
        let mut decoder = SseDecoder::new(16);
        assert_eq!(
            decoder.feed(b"data: 0123456789012345678"),
            Err(EventTooLarge { limit: 16 }),
            "a line that never ends is refused before it fills memory"
        );
    }

    proptest! {
        /// However the bytes are split, the events are the same.
        #[test]
        fn chunking_does_not_matter(
            lines in proptest::collection::vec(
                prop_oneof![
                    "data: [a-z {}\":]{0,12}",
                    "event: [a-z]{1,5}",
                    ":[ -~]{0,6}",
                    Just(String::new()),
                    "data",
                ],
                0..24,
            ),
            endings in proptest::collection::vec(prop_oneof![Just("\n"), Just("\r\n"), Just("\r")], 24),
            chunks in proptest::collection::vec(1usize..9, 0..40),
        ) {
            let mut input = Vec::new();
            for (line, ending) in lines.iter().zip(&endings) {
                input.extend_from_slice(line.as_bytes());
                input.extend_from_slice(ending.as_bytes());
            }
            let whole = decode_all(&input, &[]).unwrap();
            let split = decode_all(&input, &chunks).unwrap();
            prop_assert_eq!(whole, split);
        }

        /// Arbitrary bytes never panic, and never yield more than the limit.
        #[test]
        fn arbitrary_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut decoder = SseDecoder::new(64);
            if decoder.feed(&bytes).is_ok() {
                while let Ok(Some(event)) = decoder.next_event() {
                    prop_assert!(event.data.len() <= 64 * 3);
                }
            }
        }
    }
}
