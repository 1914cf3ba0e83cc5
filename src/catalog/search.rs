//! Substring search over product names and descriptions, Korean included.
//!
//! Neither backend can do it: MariaDB's FULLTEXT has no n-gram parser and SQLite's trigram
//! tokenizer needs three characters, while a Korean word is often two syllables. So the live
//! catalog keeps an in-memory bigram index: every pair of adjacent characters of a product's
//! normalised text points to the product's document. A query's bigrams, intersected, give the
//! candidates; each candidate is then checked for the whole query as a substring, so a hit is
//! never a coincidence of pairs.
//!
//! Documents are append-only: a product whose text changes gets a new document, and the old
//! one is left behind as stale (its product no longer names it), so postings stay sorted
//! without rewriting them. Once stale documents outnumber live ones the live catalog rebuilds
//! the index from the current texts, so memory follows the catalog, not its edit history.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

/// Shortest query, in characters.
pub const MIN_QUERY_CHARS: usize = 2;
/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 50;

/// Text as it is indexed and searched: compatibility forms folded (NFKC), lower case, control
/// characters as spaces, and runs of white space as one space, so `ＡＩＲ  Max` finds `air max`.
pub fn normalise(text: &str) -> String {
    let folded: String = text
        .nfkc()
        .collect::<String>()
        .to_lowercase()
        .nfkc()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Why a query is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Fewer than [`MIN_QUERY_CHARS`] or more than [`MAX_QUERY_CHARS`] characters as sent.
    #[error("q must be {MIN_QUERY_CHARS} to {MAX_QUERY_CHARS} characters")]
    Length,
}

/// A normalised query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    text: String,
}

impl Query {
    /// Checks the length of `q` as sent and normalises it. Every character is literal: `%`,
    /// `_` and quotes match themselves, as nothing here is a pattern language. A query that
    /// normalises to fewer than two characters (white space, control characters) matches
    /// nothing.
    pub fn parse(q: &str) -> Result<Self, QueryError> {
        let chars = q.chars().count();
        if !(MIN_QUERY_CHARS..=MAX_QUERY_CHARS).contains(&chars) {
            return Err(QueryError::Length);
        }
        Ok(Self { text: normalise(q) })
    }

    /// The normalised text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a normalised document text contains the query.
    pub fn matches(&self, normalised: &str) -> bool {
        self.text.chars().nth(1).is_some() && normalised.contains(&self.text)
    }
}

type Bigram = [char; 2];

fn bigrams(text: &str) -> impl Iterator<Item = Bigram> + '_ {
    let mut chars = text.chars();
    let mut previous = chars.next();
    chars.map(move |c| {
        let pair = [previous.unwrap_or(c), c];
        previous = Some(c);
        pair
    })
}

/// The bigram index: document numbers per bigram, ascending.
#[derive(Debug, Default)]
pub struct Index {
    postings: HashMap<Bigram, Vec<u32>>,
    documents: u32,
}

impl Index {
    /// Indexes a normalised text as a new document and returns its number.
    pub fn add(&mut self, normalised: &str) -> u32 {
        let doc = self.documents;
        self.documents += 1;
        let mut seen: Vec<Bigram> = bigrams(normalised).collect();
        seen.sort_unstable();
        seen.dedup();
        for bigram in seen {
            self.postings.entry(bigram).or_default().push(doc);
        }
        doc
    }

    /// The documents holding every bigram of `query`, ascending; a superset of the matches
    /// (check each with [`Query::matches`]), stale documents included.
    pub fn candidates(&self, query: &Query) -> Vec<u32> {
        let mut wanted: Vec<Bigram> = bigrams(query.text()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut lists = Vec::with_capacity(wanted.len());
        for bigram in &wanted {
            match self.postings.get(bigram) {
                Some(list) => lists.push(list.as_slice()),
                None => return Vec::new(),
            }
        }
        lists.sort_by_key(|l| l.len());
        let Some((first, rest)) = lists.split_first() else {
            return Vec::new();
        };
        first
            .iter()
            .copied()
            .filter(|doc| rest.iter().all(|list| list.binary_search(doc).is_ok()))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn search(index: &Index, texts: &[String], q: &str) -> Vec<u32> {
        let query = Query::parse(q).unwrap();
        index
            .candidates(&query)
            .into_iter()
            .filter(|d| query.matches(&texts[*d as usize]))
            .collect()
    }

    #[test]
    fn finds_korean_and_latin_substrings_and_nothing_else() {
        let texts: Vec<String> = [
            "나이키 에어맥스 한정판",
            "아디다스 삼바",
            "Air Max 97 silver bullet",
            "에어 조던 1",
        ]
        .iter()
        .map(|t| normalise(t))
        .collect();
        let mut index = Index::default();
        for t in &texts {
            index.add(t);
        }
        assert_eq!(search(&index, &texts, "에어"), vec![0, 3]);
        assert_eq!(search(&index, &texts, "에어맥스"), vec![0]);
        assert_eq!(search(&index, &texts, "AIR max"), vec![2]);
        assert_eq!(search(&index, &texts, "ａｉｒ"), vec![2]);
        assert!(search(&index, &texts, "맥스에").is_empty());
        assert!(search(&index, &texts, "삼바x").is_empty());
    }

    #[test]
    fn pattern_characters_are_literal() {
        let texts: Vec<String> = ["100% cotton", "snake_case tee", "abxbc"]
            .iter()
            .map(|t| normalise(t))
            .collect();
        let mut index = Index::default();
        for t in &texts {
            index.add(t);
        }
        assert_eq!(search(&index, &texts, "0%"), vec![0]);
        assert_eq!(search(&index, &texts, "e_c"), vec![1]);
        assert!(search(&index, &texts, "%%").is_empty());
        assert!(search(&index, &texts, "__").is_empty());
        // Both bigrams of "abc" are in "abxbc", the substring is not: the check refuses it.
        assert_eq!(index.candidates(&Query::parse("abc").unwrap()), vec![2]);
        assert!(search(&index, &texts, "abc").is_empty());
    }

    #[test]
    fn a_query_has_two_to_fifty_characters_as_sent() {
        assert_eq!(Query::parse("a"), Err(QueryError::Length));
        // Long enough as sent, one character once normalised: it matches nothing.
        let short = Query::parse("  a  ").unwrap();
        assert!(!short.matches("a b c"));
        assert!(Index::default().candidates(&short).is_empty());
        assert_eq!(Query::parse(&"가".repeat(51)), Err(QueryError::Length));
        assert!(Query::parse(&"가".repeat(50)).is_ok());
        assert_eq!(Query::parse(" 신  발 ").unwrap().text(), "신 발");
        assert_eq!(normalise("a\u{1f}b\u{0}c"), "a b c");
    }
}
