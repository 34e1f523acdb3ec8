//! The pre-visit symptom questionnaire, as French cancer centers asked of
//! their patients during COVID-19.

use serde::{Deserialize, Serialize};

/// Longest free-text answer, in characters.
pub const MAX_FREE_TEXT: usize = 2000;

/// A patient's answers. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    /// Fever in the last 24 hours.
    pub fever: bool,
    /// A cough.
    pub cough: bool,
    /// Breathlessness.
    pub breathlessness: bool,
    /// Pain, 0 (none) to 10 (worst imaginable).
    pub pain: u8,
    /// Unusual fatigue.
    pub fatigue: bool,
    /// New symptoms, in the patient's words.
    #[serde(default)]
    pub new_symptoms: String,
}

impl Answers {
    /// Checks ranges and lengths.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.pain > 10 {
            return Err("pain must be between 0 and 10");
        }
        if self.new_symptoms.chars().count() > MAX_FREE_TEXT {
            return Err("new_symptoms is longer than 2000 characters");
        }
        Ok(())
    }

    /// Answers that should catch a clinician's eye: fever, breathlessness,
    /// or pain of 7 or more.
    pub fn red_flags(&self) -> Vec<&'static str> {
        let mut flags = Vec::new();
        if self.fever {
            flags.push("fever");
        }
        if self.breathlessness {
            flags.push("breathlessness");
        }
        if self.pain >= 7 {
            flags.push("pain");
        }
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_flags() {
        let a: Answers = serde_json::from_str(
            r#"{"fever":true,"cough":false,"breathlessness":false,"pain":8,"fatigue":true,"new_symptoms":"rash"}"#,
        )
        .unwrap();
        assert!(a.validate().is_ok());
        assert_eq!(a.red_flags(), ["fever", "pain"]);
        let bad = Answers { pain: 11, ..a.clone() };
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<Answers>(r#"{"fever":true,"surprise":1}"#).is_err());
    }
}
