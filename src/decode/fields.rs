//! Which top-level fields of a JSON object the table has no column for.
//!
//! Arrow's JSON decoder drops fields the schema does not name without a word; a user who added a
//! field upstream would lose it silently. [`KnownFields::unknown`] walks the object's top level
//! once (keys compared, values skipped byte by byte, nothing allocated) so every unknown field
//! is counted, and with `--evolve` becomes a column. A value that is not a well-formed object
//! reports nothing here: the decoder rejects it with the reason.

use ahash::AHashSet;

/// The names of the table's value fields. (Hashed: comparing each key with six names in turn
/// measured 1.7x slower in `json_field_scan`.)
#[derive(Debug, Clone, Default)]
pub struct KnownFields {
    names: AHashSet<Box<[u8]>>,
}

impl KnownFields {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            names: names
                .into_iter()
                .map(|n| n.as_bytes().to_vec().into_boxed_slice())
                .collect(),
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.names.contains(key)
    }

    /// Calls `unknown` with each top-level key of the object `v` that is not a known name (its
    /// raw bytes between the quotes, escapes not undone); returns how many there were.
    pub fn unknown(&self, v: &[u8], mut unknown: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        let _ = top_level_keys(v, |k| {
            if !self.is_known(k) {
                n += 1;
                unknown(k);
            }
        });
        n
    }

    fn is_known(&self, raw: &[u8]) -> bool {
        if self.contains(raw) {
            return true;
        }
        // A key with escapes (`"na\u006de"`) is compared once unescaped.
        raw.contains(&b'\\') && unescape(raw).is_some_and(|k| self.contains(k.as_bytes()))
    }
}

/// A key's raw bytes as the name it spells.
pub fn unescape(raw: &[u8]) -> Option<String> {
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw).ok().map(str::to_owned);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).ok()
}

/// Calls `key` with the raw bytes of each top-level key of the object `b`. `None` when `b` is not
/// one object (the keys seen so far were reported).
fn top_level_keys(b: &[u8], mut key: impl FnMut(&[u8])) -> Option<()> {
    let mut i = ws(b, 0);
    if *b.get(i)? != b'{' {
        return None;
    }
    i = ws(b, i + 1);
    if *b.get(i)? == b'}' {
        return Some(());
    }
    loop {
        if *b.get(i)? != b'"' {
            return None;
        }
        let end = string_end(b, i + 1)?;
        key(&b[i + 1..end - 1]);
        i = ws(b, end);
        if *b.get(i)? != b':' {
            return None;
        }
        i = ws(b, value_end(b, ws(b, i + 1))?);
        match *b.get(i)? {
            b',' => i = ws(b, i + 1),
            b'}' => return Some(()),
            _ => return None,
        }
    }
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// `i` just after an opening quote; the index after the closing quote.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// The index just after the value starting at `i`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i + 1),
        b'{' | b'[' => {
            let (mut depth, mut i) = (1usize, i + 1);
            while depth > 0 {
                match *b.get(i)? {
                    b'"' => i = string_end(b, i + 1)?,
                    b'{' | b'[' => {
                        depth += 1;
                        i += 1;
                    }
                    b'}' | b']' => {
                        depth -= 1;
                        i += 1;
                    }
                    _ => i += 1,
                }
            }
            Some(i)
        }
        _ => {
            let mut j = i;
            while !matches!(
                b.get(j),
                None | Some(b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
            ) {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unknown(known: &[&str], v: &str) -> Vec<String> {
        let k = KnownFields::new(known.iter().copied());
        let mut out = Vec::new();
        let n = k.unknown(v.as_bytes(), |raw| out.push(unescape(raw).unwrap()));
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn reports_only_top_level_keys_the_table_lacks() {
        let v = r#" { "id" : 1, "new": {"id": [1, {"deep": "}"}]}, "s": "a\"b,}", "n": null,
            "x\u0079": true, "arr": [], "e": {} } "#;
        assert_eq!(unknown(&["id", "s", "xy"], v), ["new", "n", "arr", "e"]);
        assert!(unknown(&["id"], "{}").is_empty());
        assert!(unknown(&[], "[1,2]").is_empty(), "not an object");
        assert_eq!(
            unknown(&[], r#"{"a":1"#),
            ["a"],
            "truncated: keys seen so far"
        );
        assert!(unknown(&[], "").is_empty());
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            (-1e9f64..1e9).prop_map(serde_json::Value::from),
            ".{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever serde_json writes (pretty or not), the scan finds exactly its top-level keys.
        #[test]
        fn finds_the_keys_serde_json_wrote(
            fields in prop::collection::btree_map(".{0,6}", json(), 0..6),
            pretty in any::<bool>(),
        ) {
            let obj = serde_json::Value::Object(fields.clone().into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&obj).unwrap()
            } else {
                serde_json::to_string(&obj).unwrap()
            };
            let mut seen = Vec::new();
            top_level_keys(text.as_bytes(), |k| seen.push(unescape(k).unwrap()))
                .expect("a well-formed object");
            let want: Vec<String> = fields.keys().cloned().collect();
            prop_assert_eq!(seen, want);
        }
    }
}
