//! The sign-up and profile rules, as parse-don't-validate functions: each returns the
//! normalised value or a message for the field. Rust's `regex` has no look-ahead, and these
//! rules read more plainly as code anyway.

use std::str::FromStr;

/// A rule a field broke: the field name (as in the request body) and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, for example `login_id` or `address.line1`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// An error for `field`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Shortest and longest login id.
pub const LOGIN_ID_LEN: (usize, usize) = (5, 25);
/// Shortest and longest password, in characters (NIST SP 800-63B: length, no composition rules).
pub const PASSWORD_LEN: (usize, usize) = (10, 128);
/// Longest name, in characters.
pub const NAME_MAX: usize = 50;
/// Longest address line, in characters.
pub const ADDRESS_LINE_MAX: usize = 200;
/// Longest e-mail address (RFC 5321 path limit).
pub const EMAIL_MAX: usize = 254;

/// Passwords that are refused however long they are: every password of 10 characters and more
/// among the 30,000 commonest of zxcvbn's frequency list (Dropbox's zxcvbn, MIT licence, as
/// shipped by the `zxcvbn` crate 3.1.1), then a few more (shorter ones fail the length rule
/// anyway). One lower-case password per line.
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

/// 5 to 25 ASCII letters and digits with at least one letter; stored in lower case, so login
/// ids are unique and matched without regard to case.
pub fn login_id(value: &str) -> Result<String, String> {
    let (min, max) = LOGIN_ID_LEN;
    if value.len() < min || value.len() > max {
        return Err(format!("must be {min} to {max} letters and digits"));
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("may contain only the ASCII letters a-z, A-Z and digits".into());
    }
    if !value.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Err("must contain at least one letter".into());
    }
    Ok(value.to_ascii_lowercase())
}

/// 10 to 128 characters, any characters; not one of the commonest passwords, not the login id.
pub fn password(value: &str, login_id: &str) -> Result<(), String> {
    let (min, max) = PASSWORD_LEN;
    let len = value.chars().count();
    if len < min {
        return Err(format!("must be at least {min} characters"));
    }
    if len > max {
        return Err(format!("must be at most {max} characters"));
    }
    if value.eq_ignore_ascii_case(login_id) {
        return Err("must not be the login id".into());
    }
    let lower = value.to_lowercase();
    if COMMON_PASSWORDS
        .lines()
        .any(|common| common.trim() == lower)
    {
        return Err("is too common; choose another".into());
    }
    Ok(())
}

/// Bidirectional formatting characters: they reorder how the text around them displays (a
/// name could make an order page read differently from what it says, a device name fake a
/// file name).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that show nothing on their own: spaces, format characters (zero-width,
/// joiners, musical and Egyptian format controls...), unassigned code points, non-spacing and
/// enclosing marks (which only show on a letter), fillers (the Hangul ones among them),
/// variation selectors and tags. A text made only of these is blank.
pub fn is_invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c.is_whitespace()
        || matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::Unassigned
                | GeneralCategory::NonspacingMark
                | GeneralCategory::EnclosingMark
        )
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}'
            | '\u{2800}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}' | '\u{E0100}'..='\u{E01EF}'
            // Combining diacritical marks (basic, extended, supplement, for symbols, half marks).
            | '\u{0300}'..='\u{036F}' | '\u{1AB0}'..='\u{1AFF}' | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}' | '\u{FE20}'..='\u{FE2F}')
}

/// Control characters and the line and paragraph separators: no one-line text holds them.
fn is_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// The rules every one-line text a member types shares (names, address lines, device names):
/// no control characters, no bidirectional formatting.
fn plain(text: &str) -> Result<(), String> {
    if text.chars().any(is_control) {
        return Err("must not contain control characters".into());
    }
    if text.chars().any(is_bidi_control) {
        return Err("must not contain bidirectional formatting characters".into());
    }
    Ok(())
}

/// A one-line text of the catalog (a product name, an option label, a reason): no control
/// or bidirectional formatting characters, and not only invisible ones. With `strict`, no
/// invisible character at all but the space (labels, so that `S` and `S` with a zero-width
/// space are not two options that look alike).
pub fn one_line(value: &str, strict: bool) -> Result<(), String> {
    plain(value)?;
    let trimmed = value.trim();
    if !trimmed.is_empty() && trimmed.chars().all(is_invisible) {
        return Err("must not be blank".into());
    }
    if strict && trimmed.chars().any(|c| c != ' ' && is_invisible(c)) {
        return Err("must not contain invisible characters".into());
    }
    Ok(())
}

/// A text of several lines (a description): line breaks and tabs, but no other control
/// characters and no bidirectional formatting.
pub fn multi_line(value: &str) -> Result<(), String> {
    if value
        .chars()
        .any(|c| is_control(c) && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err("must not contain control characters".into());
    }
    if value.chars().any(is_bidi_control) {
        return Err("must not contain bidirectional formatting characters".into());
    }
    Ok(())
}

/// A name: 1 to 50 characters after trimming, with something visible, no control or
/// bidirectional formatting characters.
pub fn name(value: &str) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed.chars().all(is_invisible) {
        return Err("must not be blank".into());
    }
    if trimmed.chars().count() > NAME_MAX {
        return Err(format!("must be at most {NAME_MAX} characters"));
    }
    plain(trimmed)?;
    Ok(trimmed.to_owned())
}

/// A Korean mobile number `01X-XXX(X)-XXXX` with X in 0, 1, 6-9 for the carrier digit, as the
/// old system accepted (`010-2720-9158`, `011-389-0404`).
pub fn phone(value: &str) -> Result<String, String> {
    const RULE: &str = "must be a Korean mobile number such as 010-1234-5678";
    let parts: Vec<&str> = value.trim().split('-').collect();
    let digits =
        |s: &str, lens: &[usize]| lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    match parts.as_slice() {
        [carrier, middle, last]
            if digits(carrier, &[3])
                && carrier.starts_with("01")
                && matches!(carrier.as_bytes()[2], b'0' | b'1' | b'6'..=b'9')
                && digits(middle, &[3, 4])
                && digits(last, &[4]) =>
        {
            Ok(value.trim().to_owned())
        }
        _ => Err(RULE.into()),
    }
}

/// The blind-index form of a phone number: its digits.
pub fn phone_key(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

/// An e-mail address by RFC 5322 (the `email_address` crate), with a dotted domain and at
/// most 254 characters. Returned trimmed, with the domain in lower case.
pub fn email(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.len() > EMAIL_MAX {
        return Err(format!("must be at most {EMAIL_MAX} characters"));
    }
    const SHAPE: &str = "must be an e-mail address such as name@example.com";
    let options = email_address::Options::default()
        .without_display_text()
        .without_domain_literal();
    let parsed = email_address::EmailAddress::parse_with_options(value, options)
        .map_err(|_| SHAPE.to_string())?;
    let domain = parsed.domain();
    if !domain.contains('.') || domain.starts_with('[') || domain.ends_with('.') {
        return Err("must have a domain such as example.com".into());
    }
    // A quoted local part (`"john"@example.com`) reaches the mailbox of the unquoted one: it
    // would let one mailbox hold many accounts.
    if parsed.local_part().starts_with('"') {
        return Err(SHAPE.into());
    }
    let address = format!("{}@{}", parsed.local_part(), domain.to_ascii_lowercase());
    // What the mailer cannot send to (a quoted local part such as "john doe") would leave
    // the member unable ever to verify: refuse it here.
    if lettre::message::Mailbox::from_str(&address).is_err() {
        return Err(SHAPE.into());
    }
    Ok(address)
}

/// The blind-index form of an e-mail address: all in lower case.
pub fn email_key(email: &str) -> String {
    email.to_lowercase()
}

/// An address line: trimmed, at most 200 characters; `required` refuses a blank one.
pub fn address_line(value: &str, required: bool) -> Result<String, String> {
    let trimmed = value.trim();
    if required && trimmed.chars().all(is_invisible) {
        return Err("must not be blank".into());
    }
    if trimmed.chars().count() > ADDRESS_LINE_MAX {
        return Err(format!("must be at most {ADDRESS_LINE_MAX} characters"));
    }
    plain(trimmed)?;
    Ok(trimmed.to_owned())
}

/// A Korean postal code: 5 digits.
pub fn postal_code(value: &str) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed.len() == 5 && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        Ok(trimmed.to_owned())
    } else {
        Err("must be 5 digits".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_ids() {
        let valid = [
            "abcde",
            "user1",
            "A1b2C3",
            "1234a",
            "abcdefghijklmnopqrstuvwxy",
        ];
        for v in valid {
            assert_eq!(login_id(v), Ok(v.to_ascii_lowercase()), "{v}");
        }
        let invalid = [
            ("abcd", "4 characters"),
            ("abcdefghijklmnopqrstuvwxyz", "26 characters"),
            ("12345", "no letter"),
            ("user_1", "underscore"),
            ("user 1", "space"),
            ("user-1", "hyphen"),
            ("üseré", "not ASCII"),
            ("", "empty"),
        ];
        for (v, why) in invalid {
            assert!(login_id(v).is_err(), "{v:?} ({why}) must be refused");
        }
    }

    #[test]
    fn passwords() {
        // No composition rules: the old system's special-character rule is gone.
        let valid = [
            "correct horse battery staple",
            "abcdefghij&k",
            "비밀번호는길어야합니다",
            "0123456789x",
        ];
        for v in valid {
            assert_eq!(password(v, "someone1"), Ok(()), "{v}");
        }
        let long = "x".repeat(129);
        let invalid = [
            ("short1!", "too short"),
            ("abcdefghi", "9 characters"),
            (long.as_str(), "129 characters"),
            ("password123", "common"),
            ("QWERTYUIOP", "common, any case"),
            ("1234567890", "common"),
            ("someone1234", "equals the login id"),
            ("SOMEONE1234", "equals the login id, any case"),
        ];
        for (v, why) in invalid {
            assert!(password(v, "someone1234").is_err(), "{v:?} ({why})");
        }
        assert_eq!(password(&"x".repeat(128), "a"), Ok(()));
    }

    #[test]
    fn phones() {
        let valid = [
            "010-2720-9158",
            "011-389-0404",
            "016-123-4567",
            "017-1234-5678",
            "018-123-4567",
            "019-9999-0000",
        ];
        for v in valid {
            assert_eq!(phone(v), Ok(v.to_owned()), "{v}");
        }
        let invalid = [
            "012-1234-5678",
            "015-1234-5678",
            "02-123-4567",
            "010-12-5678",
            "010-12345-5678",
            "010-1234-567",
            "01012345678",
            "010 1234 5678",
            "010-1234-5678-1",
            "0１0-1234-5678",
            "",
        ];
        for v in invalid {
            assert!(phone(v).is_err(), "{v:?} must be refused");
        }
        assert_eq!(phone_key("010-2720-9158"), "01027209158");
    }

    #[test]
    fn names() {
        assert_eq!(name("  홍길동 "), Ok("홍길동".into()));
        assert_eq!(name("Jane Doe"), Ok("Jane Doe".into()));
        // A joiner inside an emoji sequence is part of a visible name.
        assert!(name("Kim \u{1F469}\u{200D}\u{1F4BB}").is_ok());
        for v in [
            "",
            "   ",
            "\t",
            "a\u{0}b",
            &"가".repeat(51),
            "\u{200B}\u{200B}",
            "\u{200D} \u{FEFF}\u{2060}",
            "Jane\u{202E}eoD",
            "\u{2067}Kim",
            "\u{3164}",
            "\u{115F}\u{1160}",
            "\u{FFA0}\u{200B}",
            "\u{034F}\u{2800}",
            "\u{FE0F}\u{E0041}",
            "\u{0301}\u{0302}",
            "\u{180B}\u{17B4}\u{FFF9}",
            "Kim\u{2028}Lee",
            // Found by an outside test: format characters and unassigned code points.
            "\u{1D173}",
            "\u{1D17A}\u{206A}",
            "\u{13430}\u{1BCA0}",
            "\u{0600}\u{06DD}\u{08E2}",
            "\u{FFF0}\u{1D455}",
        ] {
            assert!(name(v).is_err(), "{v:?} must be refused");
        }
    }

    #[test]
    fn emails() {
        // The old regex refused several of these (two-level domains, dots, plus, short local).
        let valid = [
            ("x@a.co.kr", "x@a.co.kr"),
            ("first.last@example.com", "first.last@example.com"),
            ("user+tag@Example.COM", "user+tag@example.com"),
            ("a_b@mail.example.org", "a_b@mail.example.org"),
            ("UPPER@example.com", "UPPER@example.com"),
        ];
        for (v, normalised) in valid {
            assert_eq!(email(v), Ok(normalised.into()), "{v}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        let invalid = [
            "plainaddress",
            "@example.com",
            "user@",
            "user@localhost",
            "user@@example.com",
            "user@exa mple.com",
            "user name@example.com",
            "user@example.com.",
            "\"john doe\"@example.com",
            "\"m71001\"@example.com",
            "Jane <jane@example.com>",
            "user@[127.0.0.1]",
            long.as_str(),
            "",
        ];
        for v in invalid {
            assert!(email(v).is_err(), "{v:?} must be refused");
        }
        assert_eq!(email_key("UPPER@example.com"), "upper@example.com");
    }

    #[test]
    fn address_lines_and_postal_codes() {
        assert_eq!(
            address_line(" 서울시 강남구 ", true),
            Ok("서울시 강남구".into())
        );
        assert_eq!(address_line("", false), Ok(String::new()));
        assert!(address_line("  ", true).is_err());
        assert!(address_line(&"a".repeat(201), false).is_err());
        for v in ["Seoul \u{202E}1", "\u{200B}\u{3164}", "a\u{2029}b"] {
            assert!(address_line(v, true).is_err(), "{v:?}");
        }
        assert_eq!(postal_code("06236"), Ok("06236".into()));
        for v in ["0623", "062366", "06a36", ""] {
            assert!(postal_code(v).is_err(), "{v:?}");
        }
    }
}
