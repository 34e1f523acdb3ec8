//! Checks on free text from people: lengths and no control characters. The
//! value is stored exactly as given (names with apostrophes, accents and
//! emoji are fine; the store binds every value).

use crate::http_error::ApiError;

/// Checks a free-text field: `min` to `max` characters (and `min` after
/// trimming), no control characters.
pub fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n < min || value.trim().chars().count() < min {
        return Err(ApiError::invalid(field, "is required"));
    }
    if n > max {
        return Err(ApiError::invalid(field, &format!("must be at most {max} characters")));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_bounds_and_control_characters() {
        assert!(super::check_text("name", "Zoë O'Brien", 1, 200).is_ok());
        assert!(super::check_text("name", "   ", 1, 200).is_err());
        assert!(super::check_text("name", "a\u{0}b", 1, 200).is_err());
        assert!(super::check_text("name", &"x".repeat(201), 1, 200).is_err());
    }
}
