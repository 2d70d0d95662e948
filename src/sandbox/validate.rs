//! Syntax checks the providers document for their fields: email, E.164 phone, UUID v4, country codes.

/// Address syntax as providers check it: `local@domain`, dot-atom local part, a domain of at least
/// two LDH labels. Length limits differ per provider and are checked by the caller.
pub(crate) fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    local_ok && domain_ok
}

/// E.164: `+`, then 8 to 15 digits, the first one 1–9.
pub(crate) fn is_e164(text: &str) -> bool {
    let Some(digits) = text.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
}

/// A hyphenated (8-4-4-4-12) UUID of version 4, in either case.
pub(crate) fn is_uuid_v4(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse(text).is_ok_and(|id| id.get_version_num() == 4)
}

/// Two ASCII letters; `upper_only` also demands upper case (Sweet Spot's ISO code).
pub(crate) fn is_alpha2(text: &str, upper_only: bool) -> bool {
    text.len() == 2
        && text
            .chars()
            .all(|c| c.is_ascii_alphabetic() && (!upper_only || c.is_ascii_uppercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for good in [
            "test@custom.er",
            "Tom.jones@climbing.com",
            "a+b@x-y.example",
        ] {
            assert!(is_email(good), "{good}");
        }
        for bad in [
            "",
            "plain",
            "@x.com",
            "a@",
            "a@com",
            "a..b@x.com",
            "a@-x.com",
            "a b@x.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn phones_uuids_countries() {
        assert!(is_e164("+2348012345678"));
        assert!(!is_e164("+0348012345"));
        assert!(!is_e164("2348012345678"));
        assert!(!is_e164("+1234567"));
        assert!(is_uuid_v4("3b241101-e2bb-4255-8caf-4136c566a962"));
        assert!(is_uuid_v4("3B241101-E2BB-4255-8CAF-4136C566A962"));
        assert!(!is_uuid_v4("3b241101-e2bb-1255-8caf-4136c566a962"));
        assert!(!is_uuid_v4("3b241101e2bb42558caf4136c566a962"));
        assert!(is_alpha2("US", true));
        assert!(!is_alpha2("us", true));
        assert!(is_alpha2("us", false));
        assert!(!is_alpha2("USA", false));
    }
}
