//! Unit names for workers. Model ids come from users and from Hugging Face; escaping them
//! the way `systemd-escape` does means no id can inject anything into a unit name.

/// Prefix of every worker unit (the template name systemd groups them under).
pub const WORKER_PREFIX: &str = "rbee-worker@";
/// Longest unit name systemd accepts.
pub const UNIT_NAME_MAX: usize = 255;

/// Escapes `s` for use as a unit name instance, like `systemd-escape` (without `--path`):
/// `/` becomes `-`; ASCII letters, digits, `:`, `_` and `.` (not leading) stay; every other
/// byte becomes `\xNN`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The unit name of worker number `n` (0 for the first) serving `model_id`:
/// `rbee-worker@<escaped-model-id>.service`, then `…-2`, `…-3` for further workers of the
/// same model. Over-long ids are cut and made unique with a hash of the whole id, so the
/// name always starts with the id and fits systemd's limit.
pub fn worker_unit(model_id: &str, n: u32) -> String {
    let suffix = if n == 0 {
        String::new()
    } else {
        format!("-{}", n + 1)
    };
    let escaped = escape(model_id);
    let room = UNIT_NAME_MAX - WORKER_PREFIX.len() - ".service".len() - suffix.len();
    let instance = if escaped.len() <= room {
        escaped
    } else {
        let hash = format!("_{:016x}", fnv1a(model_id.as_bytes()));
        let mut cut = room - hash.len();
        // Never cut inside an escape sequence.
        while let Some(pos) = escaped[..cut].rfind('\\') {
            if cut - pos >= 4 {
                break;
            }
            cut = pos;
        }
        format!("{}{hash}", &escaped[..cut])
    };
    format!("{WORKER_PREFIX}{instance}{suffix}.service")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_systemd_escape() {
        // Expected values produced by `systemd-escape` 252.
        assert_eq!(escape("hf:org/repo:Q4_K_M"), "hf:org-repo:Q4_K_M");
        assert_eq!(escape("a b"), "a\\x20b");
        assert_eq!(escape(".hidden"), "\\x2ehidden");
        assert_eq!(escape("x@y\nz"), "x\\x40y\\x0az");
        assert_eq!(escape("../etc"), "\\x2e.-etc");
    }

    #[test]
    fn hostile_ids_give_valid_bounded_names() {
        let hostile = format!("../{}@ x\n{}", "a".repeat(150), "é".repeat(100));
        for n in [0, 1, 7] {
            let name = worker_unit(&hostile, n);
            assert!(name.len() <= UNIT_NAME_MAX, "{} chars", name.len());
            assert!(name.starts_with("rbee-worker@\\x2e.-aaaa"), "{name}");
            assert!(name.ends_with(".service"));
            assert!(name.bytes().all(|b| b.is_ascii_graphic()), "{name}");
            assert_eq!(name.matches('@').count(), 1, "{name}");
        }
        assert_ne!(
            worker_unit(&hostile, 0),
            worker_unit(&format!("{hostile}!"), 0)
        );
    }

    #[test]
    fn further_workers_of_a_model_get_distinct_names_that_start_with_the_id() {
        assert_eq!(worker_unit("smol", 0), "rbee-worker@smol.service");
        assert_eq!(worker_unit("smol", 1), "rbee-worker@smol-2.service");
    }
}
