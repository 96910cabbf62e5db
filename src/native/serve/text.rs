//! Tokens → text for one choice, as it streams: byte-level BPE can split a character across
//! tokens, and a stop string can span tokens, so text is released only once it is final —
//! never a half character (U+FFFD at the end waits for the next token) and never the start of
//! what may become a stop string. The stop string itself is cut, as OpenAI does.

use crate::engine::tokenizer::Tokenizer;

pub struct TextStream {
    ids: Vec<u32>,
    stops: Vec<String>,
    /// Bytes of the decoded text already released.
    released: usize,
}

/// What one token released.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    pub text: String,
    /// A stop string matched: the choice is over.
    pub stopped: bool,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        Self { ids: vec![], stops, released: 0 }
    }

    pub fn push(&mut self, id: u32, tokenizer: &Tokenizer) -> Delta {
        self.ids.push(id);
        let text = self.decoded(tokenizer);
        if let Some(at) = self.stops.iter().filter_map(|s| text.find(s.as_str())).min() {
            return Delta { text: self.release(&text, at), stopped: true };
        }
        let mut end = text.len() - self.held_back(&text);
        if text[..end].ends_with('\u{FFFD}') {
            end -= '\u{FFFD}'.len_utf8();
        }
        Delta { text: self.release(&text, end), stopped: false }
    }

    /// The end of the choice (no stop string matched): whatever was held back.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> String {
        let text = self.decoded(tokenizer);
        self.release(&text, text.len())
    }

    fn decoded(&self, tokenizer: &Tokenizer) -> String {
        // A decode error cannot happen for ids the model produced; show nothing rather than fail.
        tokenizer.decode(&self.ids).unwrap_or_default()
    }

    /// Releases `text[released..end]`.
    fn release(&mut self, text: &str, end: usize) -> String {
        let end = end.max(self.released);
        let out = text[self.released..end].to_string();
        self.released = end;
        out
    }

    /// Bytes at the end of `text` that could begin a stop string.
    fn held_back(&self, text: &str) -> usize {
        self.stops
            .iter()
            .flat_map(|stop| stop.char_indices().skip(1).map(|(i, _)| &stop[..i]))
            .filter(|prefix| text.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let root = std::env::var("INFERLAB_FIXTURES")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpt2").into());
        Tokenizer::from_bytes(&std::fs::read(format!("{root}/tokenizer/tokenizer.json")).unwrap()).unwrap()
    }

    fn run(text: &str, stops: &[&str]) -> (Vec<String>, bool) {
        let tok = tokenizer();
        let mut stream = TextStream::new(stops.iter().map(|s| s.to_string()).collect());
        let mut parts = vec![];
        for id in tok.encode(text).unwrap() {
            let delta = stream.push(id, &tok);
            parts.push(delta.text);
            if delta.stopped {
                return (parts, true);
            }
        }
        parts.push(stream.finish(&tok));
        (parts, false)
    }

    #[test]
    fn pieces_join_to_the_text_and_never_split_a_character() {
        let text = "Héllo wörld — 東京 🎉 done";
        let (parts, stopped) = run(text, &[]);
        assert!(!stopped);
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| !p.contains('\u{FFFD}')), "{parts:?}");
    }

    #[test]
    fn a_stop_string_across_tokens_is_cut_and_never_shown() {
        let (parts, stopped) = run("The answer is 42.\n\nQuestion: why", &["\n\nQuestion"]);
        assert!(stopped);
        assert_eq!(parts.concat(), "The answer is 42.");
        let (parts, stopped) = run("one two three", &["zzz", "two"]);
        assert!(stopped);
        assert_eq!(parts.concat(), "one ");
        let (parts, _) = run("a partial Que match", &["Question"]);
        assert_eq!(parts.concat(), "a partial Que match", "held-back text comes out once it cannot stop");
    }
}
