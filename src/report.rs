//! How an error is shown: one line, its causes `: `-joined (each once). Used by the binary's
//! last word and by every module that turns a library's error into a reason string.

/// The error and its causes on one line.
pub fn one_line(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !line.contains(&s) {
            line.push_str(": ");
            line.push_str(&s);
        }
        cur = e.source();
    }
    line.replace('\n', " ")
}
