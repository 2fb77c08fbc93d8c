//! RFC 6901 JSON pointers.

/// Appends `/segment` to `pointer`, escaping `~` as `~0` and `/` as `~1`
/// (RFC 6901, section 3).
pub(crate) fn push_key(pointer: &mut String, segment: &str) {
    pointer.push('/');
    if !segment.bytes().any(|b| b == b'~' || b == b'/') {
        pointer.push_str(segment);
        return;
    }
    for c in segment.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// Appends `/index`.
pub(crate) fn push_index(pointer: &mut String, index: usize) {
    // Digits by hand: `write!` goes through the formatting machinery, which
    // cost more than the rules of a typical array element.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut n = index;
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    pointer.push('/');
    for &d in &digits[start..] {
        pointer.push(char::from(d));
    }
}

/// The pointer of a serde_path_to_error path. An `Unknown` segment (content
/// serde buffered, as for internally tagged enums) ends the pointer at the
/// deepest known ancestor.
pub(crate) fn from_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => push_index(&mut pointer, *index),
            Segment::Map { key } => push_key(&mut pointer, key),
            Segment::Enum { variant } => push_key(&mut pointer, variant),
            Segment::Unknown => break,
        }
    }
    pointer
}

/// The pointer of a serde_ignored path (an unknown field).
pub(crate) fn from_ignored(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    fn walk(path: &Path<'_>, out: &mut String) {
        match path {
            Path::Root => {}
            Path::Seq { parent, index } => {
                walk(parent, out);
                push_index(out, *index);
            }
            Path::Map { parent, key } => {
                walk(parent, out);
                push_key(out, key);
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut pointer = String::new();
    walk(path, &mut pointer);
    pointer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_tilde_before_slash() {
        let mut p = String::new();
        push_key(&mut p, "a/b~c");
        push_index(&mut p, 3);
        push_key(&mut p, "~1");
        push_index(&mut p, 0);
        push_index(&mut p, usize::MAX);
        assert_eq!(p, format!("/a~1b~0c/3/~01/0/{}", usize::MAX));
    }
}
