//! A small regular-expression matcher for the patterns PEFT configs hold (`target_modules`
//! or `exclude_modules` given as a string, which PEFT full-matches against module names).
//!
//! Supported: literals and escapes (`\.`, `\d`, `\w`, `\s`), `.`, classes `[a-z_]` and
//! `[^…]`, groups `(…)` and `(?:…)`, alternation `|`, the quantifiers `*`, `+`, `?`,
//! `{m}`, `{m,}`, `{m,n}` (each may be followed by `?`), and the anchors `^` and `$`.
//! Anything else (look-around, back-references) is an error, so a pattern is never
//! silently misread. Matching backtracks; module names are short.

use anyhow::{bail, Result};

/// A parsed pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    root: Node,
}

#[derive(Clone, Debug)]
enum Node {
    /// One character satisfying the set.
    Char(Set),
    /// A sequence.
    Seq(Vec<Node>),
    /// Alternatives.
    Alt(Vec<Node>),
    /// A repeated node: min, max (None: unbounded).
    Repeat(Box<Node>, usize, Option<usize>),
    /// `^` or `$` (the match is full anyway; they only match at the ends).
    Start,
    End,
}

#[derive(Clone, Debug)]
enum Set {
    Any,
    Lit(char),
    Digit,
    Word,
    Space,
    Class { negated: bool, items: Vec<(char, char)>, named: Vec<Set> },
}

impl Set {
    fn contains(&self, c: char) -> bool {
        match self {
            Set::Any => c != '\n',
            Set::Lit(l) => *l == c,
            Set::Digit => c.is_ascii_digit(),
            Set::Word => c.is_alphanumeric() || c == '_',
            Set::Space => c.is_whitespace(),
            Set::Class { negated, items, named } => {
                let hit = items.iter().any(|&(lo, hi)| lo <= c && c <= hi) || named.iter().any(|s| s.contains(c));
                hit != *negated
            }
        }
    }
}

struct Parser<'a> {
    chars: Vec<char>,
    at: usize,
    source: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn unsupported(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!("pattern '{}': {what} at character {} is not supported", self.source, self.at + 1)
    }

    fn alternation(&mut self) -> Result<Node> {
        let mut alts = vec![self.sequence()?];
        while self.peek() == Some('|') {
            self.at += 1;
            alts.push(self.sequence()?);
        }
        Ok(if alts.len() == 1 { alts.pop().unwrap_or(Node::Seq(Vec::new())) } else { Node::Alt(alts) })
    }

    fn sequence(&mut self) -> Result<Node> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.quantified(atom)?);
        }
        Ok(Node::Seq(items))
    }

    fn quantified(&mut self, atom: Node) -> Result<Node> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => return self.braces(atom),
            _ => return Ok(atom),
        };
        self.at += 1;
        self.lazy_marker();
        Ok(Node::Repeat(Box::new(atom), min, max))
    }

    /// A `?` after a quantifier (lazy): the set of full matches is the same, so it is skipped.
    fn lazy_marker(&mut self) {
        if self.peek() == Some('?') {
            self.at += 1;
        }
    }

    fn braces(&mut self, atom: Node) -> Result<Node> {
        let close = self.chars[self.at..].iter().position(|&c| c == '}').map(|p| self.at + p);
        let Some(close) = close else { return Err(self.unsupported("an unclosed '{'")) };
        let body: String = self.chars[self.at + 1..close].iter().collect();
        let num = |s: &str| s.trim().parse::<usize>().ok();
        let (min, max) = match body.split_once(',') {
            None => (num(&body), num(&body)),
            Some((lo, hi)) if hi.trim().is_empty() => (num(lo), None),
            Some((lo, hi)) => (num(lo), Some(num(hi).ok_or_else(|| self.unsupported("a bad repetition"))?)),
        };
        let Some(min) = min else { return Err(self.unsupported("a bad repetition")) };
        self.at = close + 1;
        self.lazy_marker();
        Ok(Node::Repeat(Box::new(atom), min, max))
    }

    fn escape(&mut self) -> Result<Set> {
        self.at += 1;
        let c = self.peek().ok_or_else(|| self.unsupported("a trailing backslash"))?;
        self.at += 1;
        Ok(match c {
            'd' => Set::Digit,
            'w' => Set::Word,
            's' => Set::Space,
            c if c.is_ascii_alphanumeric() => {
                self.at -= 1;
                return Err(self.unsupported(&format!("the escape \\{c}")));
            }
            c => Set::Lit(c),
        })
    }

    fn atom(&mut self) -> Result<Node> {
        let Some(c) = self.peek() else { return Err(self.unsupported("an empty item")) };
        match c {
            '(' => {
                self.at += 1;
                if self.peek() == Some('?') {
                    if self.chars.get(self.at + 1) == Some(&':') {
                        self.at += 2;
                    } else {
                        return Err(self.unsupported("a '(?' group other than '(?:'"));
                    }
                }
                let inner = self.alternation()?;
                if self.peek() != Some(')') {
                    return Err(self.unsupported("an unclosed '('"));
                }
                self.at += 1;
                Ok(inner)
            }
            '[' => self.class(),
            '\\' => Ok(Node::Char(self.escape()?)),
            '.' => {
                self.at += 1;
                Ok(Node::Char(Set::Any))
            }
            '^' => {
                self.at += 1;
                Ok(Node::Start)
            }
            '$' => {
                self.at += 1;
                Ok(Node::End)
            }
            '*' | '+' | '?' | '{' => Err(self.unsupported("a quantifier with nothing to repeat")),
            c => {
                self.at += 1;
                Ok(Node::Char(Set::Lit(c)))
            }
        }
    }

    fn class(&mut self) -> Result<Node> {
        self.at += 1;
        let negated = self.peek() == Some('^');
        if negated {
            self.at += 1;
        }
        let (mut items, mut named) = (Vec::new(), Vec::new());
        let mut first = true;
        loop {
            let Some(c) = self.peek() else { return Err(self.unsupported("an unclosed '['")) };
            if c == ']' && !first {
                self.at += 1;
                break;
            }
            first = false;
            let lo = if c == '\\' {
                match self.escape()? {
                    Set::Lit(l) => l,
                    other => {
                        named.push(other);
                        continue;
                    }
                }
            } else {
                self.at += 1;
                c
            };
            if self.peek() == Some('-') && self.chars.get(self.at + 1).is_some_and(|&n| n != ']') {
                self.at += 1;
                let hi = match self.peek() {
                    Some('\\') => match self.escape()? {
                        Set::Lit(l) => l,
                        _ => return Err(self.unsupported("a range ending in a class")),
                    },
                    Some(h) => {
                        self.at += 1;
                        h
                    }
                    None => return Err(self.unsupported("an unclosed '['")),
                };
                items.push((lo, hi));
            } else {
                items.push((lo, lo));
            }
        }
        Ok(Node::Char(Set::Class { negated, items, named }))
    }
}

impl Pattern {
    /// Parses `source`; errors name what is not supported and where.
    pub fn parse(source: &str) -> Result<Pattern> {
        let mut p = Parser { chars: source.chars().collect(), at: 0, source };
        let root = p.alternation()?;
        if p.at != p.chars.len() {
            bail!("pattern '{source}': unbalanced ')' at character {}", p.at + 1);
        }
        Ok(Pattern { root })
    }

    /// True when the whole of `text` matches (Python's `re.fullmatch`).
    pub fn full_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let mut done = |end: usize| end == chars.len();
        matches(&self.root, &chars, 0, &mut done)
    }
}

/// Whether `node` matches `text` from `at` such that `rest` accepts the end position
/// (continuation-passing backtracking).
fn matches(node: &Node, text: &[char], at: usize, rest: &mut dyn FnMut(usize) -> bool) -> bool {
    match node {
        Node::Char(set) => at < text.len() && set.contains(text[at]) && rest(at + 1),
        Node::Start => at == 0 && rest(at),
        Node::End => at == text.len() && rest(at),
        Node::Seq(items) => seq(items, text, at, rest),
        Node::Alt(alts) => alts.iter().any(|a| matches(a, text, at, rest)),
        Node::Repeat(inner, min, max) => repeat(inner, *min, *max, 0, text, at, rest),
    }
}

fn seq(items: &[Node], text: &[char], at: usize, rest: &mut dyn FnMut(usize) -> bool) -> bool {
    match items.split_first() {
        None => rest(at),
        Some((first, tail)) => matches(first, text, at, &mut |next| seq(tail, text, next, rest)),
    }
}

fn repeat(
    inner: &Node,
    min: usize,
    max: Option<usize>,
    count: usize,
    text: &[char],
    at: usize,
    rest: &mut dyn FnMut(usize) -> bool,
) -> bool {
    // Greedy: one more repetition first (only if it consumes input), then stop.
    if max.is_none_or(|m| count < m)
        && matches(inner, text, at, &mut |next| next > at && repeat(inner, min, max, count + 1, text, next, rest))
    {
        return true;
    }
    count >= min && rest(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Pattern::parse(p).unwrap().full_match(t)
    }

    #[test]
    fn peft_style_patterns_match_as_python_fullmatch_does() {
        let clip = r"vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj)";
        assert!(m(clip, "vision_model.encoder.layers.11.self_attn.k_proj"));
        assert!(!m(clip, "vision_model.encoder.layers.11.self_attn.out_proj"));
        assert!(!m(clip, "text_model.encoder.layers.1.self_attn.q_proj"));
        assert!(!m(clip, "vision_model.encoder.layers.1.self_attn.q_proj.extra"), "full match, not a prefix");
        let written = r"encoder\.layer\.(0|2)\.(attention\.self\.query|output\.dense)";
        assert!(m(written, "encoder.layer.2.output.dense"));
        assert!(!m(written, "encoder.layer.1.output.dense"));
        assert!(!m(written, "encoder.layer.2.attention.output.dense"));
        assert!(m(r".*\.(query|value)", "encoder.layer.0.attention.self.value"));
        assert!(m(r"^(?:a|b)+[0-9_]{2,3}c?$", "abba1_"));
        assert!(!m(r"(?:a|b)+[0-9_]{2,3}", "abba1234"));
        assert!(m(r"[^.]+\.fc1", "mlp.fc1"));
        assert!(!m(r"[^.]+\.fc1", "a.mlp.fc1"));
        assert!(m(r"x\d*?y", "x12y"));
        assert!(m("", ""));
        assert!(!m("a*", "b"));
    }

    #[test]
    fn unsupported_syntax_is_an_error_never_a_silent_mismatch() {
        for bad in [r"(?=a)b", r"(a", r"a)", r"\1", r"[ab", "*a", r"a{x}"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}
