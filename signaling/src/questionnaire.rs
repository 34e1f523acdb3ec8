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

    /// Answers that should catch a clinician's eye, under `rules`.
    pub fn red_flags(&self, rules: &RedFlagRules) -> Vec<&'static str> {
        let mut flags = Vec::new();
        for (name, present) in [
            ("fever", self.fever),
            ("cough", self.cough),
            ("breathlessness", self.breathlessness),
            ("fatigue", self.fatigue),
        ] {
            if present && rules.symptoms.iter().any(|s| s == name) {
                flags.push(name);
            }
        }
        if self.pain >= rules.pain_at_least {
            flags.push("pain");
        }
        flags
    }
}

/// Which answers are red flags. The default is fever, breathlessness, or
/// pain of 7 or more; hospitals set their own with `--red-flag-symptoms`
/// and `--red-flag-pain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedFlagRules {
    /// Yes/no symptoms that are red flags: `fever`, `cough`, `breathlessness`, `fatigue`.
    pub symptoms: Vec<String>,
    /// Pain at or above this (0–10; 11 disables).
    pub pain_at_least: u8,
}

impl Default for RedFlagRules {
    fn default() -> Self {
        RedFlagRules { symptoms: vec!["fever".into(), "breathlessness".into()], pain_at_least: 7 }
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
        assert_eq!(a.red_flags(&RedFlagRules::default()), ["fever", "pain"]);
        let strict = RedFlagRules { symptoms: vec!["fatigue".into()], pain_at_least: 9 };
        assert_eq!(a.red_flags(&strict), ["fatigue"]);
        let bad = Answers { pain: 11, ..a.clone() };
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<Answers>(r#"{"fever":true,"surprise":1}"#).is_err());
    }
}
