//! MQTT topic names and topic filters (MQTT 3.1.1 and 5.0, §4.7).
//!
//! - A topic name is 1 to 65 535 bytes of UTF-8 without NUL and without the wildcards `+`
//!   and `#`. Levels are separated by `/` and may be empty (`a//b`, `/a`).
//! - A topic filter has the same limits, except that `+` may stand alone in any level
//!   (one level, which may be empty) and `#` alone in the last level (that level's parent and
//!   everything below it).
//! - A filter whose first character is a wildcard does not match a topic name that starts
//!   with `$` (system topics such as `$SYS/...` or `$aws/...`).
//!
//! - A shared subscription `$share/{group}/{filter}` (MQTT 5 §4.8.2) is a filter too: it
//!   matches what `{filter}` matches, and the subscribers of one group share its events,
//!   each event going to one of them (round-robin, see the local bus). The group name is
//!   not empty and holds no `/`, `+` or `#`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Longest topic name or filter, in bytes (the MQTT UTF-8 string limit).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Text is not a valid topic name or topic filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Empty text.
    #[error("a topic must not be empty")]
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`].
    #[error("a topic is at most 65535 bytes; this one has {0}")]
    TooLong(usize),
    /// Holds the NUL character.
    #[error("a topic must not contain NUL")]
    Nul,
    /// A topic name holds `+` or `#`.
    #[error("a topic name must not contain wildcards ('+' or '#')")]
    WildcardInName,
    /// `+` shares its level with other characters (as in `a+` or `+a`).
    #[error("'+' must occupy a whole level, at level {level}")]
    MisplacedPlus {
        /// Level index, from 0.
        level: usize,
    },
    /// `#` is not alone in the last level (as in `a/b#` or `#/a`).
    #[error("'#' must be alone in the last level, at level {level}")]
    MisplacedHash {
        /// Level index, from 0.
        level: usize,
    },
    /// A `$share/` filter without a group name and a filter after it, or with `+`/`#` in
    /// the group name.
    #[error(
        "a shared subscription is $share/{{group}}/{{filter}} with a group name free of '+' and '#'"
    )]
    BadShare,
}

fn check_common(text: &str) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(text.len()));
    }
    if text.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// A valid MQTT topic name: where an event is published. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// Validates `text` as a topic name.
    pub fn new(text: &str) -> Result<TopicName, TopicError> {
        check_common(text)?;
        if text.contains(['+', '#']) {
            return Err(TopicError::WildcardInName);
        }
        Ok(TopicName(Arc::from(text)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The levels, split at `/`.
    pub fn levels(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// Whether it is a system topic (starts with `$`), which leading wildcards skip.
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
}

/// A valid MQTT topic filter: what a subscription or flow listens to. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(Arc<str>);

const SHARE: &str = "$share/";

/// The group and the filter of a `$share/` filter's text, unchecked.
fn split_share(text: &str) -> Option<(&str, &str)> {
    text.strip_prefix(SHARE)?.split_once('/')
}

fn check_levels(text: &str) -> Result<(), TopicError> {
    let count = text.split('/').count();
    for (level, part) in text.split('/').enumerate() {
        if part.contains('+') && part != "+" {
            return Err(TopicError::MisplacedPlus { level });
        }
        if part.contains('#') && (part != "#" || level + 1 != count) {
            return Err(TopicError::MisplacedHash { level });
        }
    }
    Ok(())
}

impl TopicFilter {
    /// Validates `text` as a topic filter (or a `$share/{group}/{filter}` one).
    pub fn new(text: &str) -> Result<TopicFilter, TopicError> {
        check_common(text)?;
        // Only `$share/{group}/...` is shared; `$share` alone is an ordinary filter (of a
        // topic named `$share`), as other brokers read it.
        if text.starts_with(SHARE) {
            let (group, filter) = split_share(text).ok_or(TopicError::BadShare)?;
            if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
                return Err(TopicError::BadShare);
            }
            check_levels(filter)?;
        } else {
            check_levels(text)?;
        }
        Ok(TopicFilter(Arc::from(text)))
    }

    /// The group of a shared subscription (`g` in `$share/g/a/+`), else `None`.
    pub fn share_group(&self) -> Option<&str> {
        split_share(&self.0).map(|(group, _)| group)
    }

    /// What topics are matched against: the filter itself, or the part after the group of
    /// a shared subscription (`a/+` in `$share/g/a/+`).
    pub fn pattern(&self) -> &str {
        split_share(&self.0).map_or(&self.0, |(_, filter)| filter)
    }

    /// The filter as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it holds a wildcard; without one it matches exactly one topic name.
    pub fn has_wildcards(&self) -> bool {
        self.pattern().contains(['+', '#'])
    }

    /// Whether `topic` matches this filter.
    pub fn matches(&self, topic: &TopicName) -> bool {
        matches_str(self.pattern(), topic.as_str())
    }
}

/// Matching on text already validated as a filter and a name.
pub(crate) fn matches_str(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match part {
            "#" => return true,
            "+" => {
                if levels.next().is_none() {
                    return false;
                }
            }
            literal => {
                if levels.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    levels.next().is_none()
}

macro_rules! text_impls {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl FromStr for $name {
            type Err = TopicError;
            fn from_str(text: &str) -> Result<Self, TopicError> {
                Self::new(text)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

text_impls!(TopicName);
text_impls!(TopicFilter);

/// A topic template could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// A `{` without its `}`, or a placeholder that is not a level number.
    #[error("bad placeholder in topic template {0:?}")]
    BadPlaceholder(String),
    /// A placeholder names a level the trigger topic does not have.
    #[error("topic template asks for level {level}, but {topic:?} has {levels} levels")]
    NoSuchLevel {
        /// The level asked for.
        level: usize,
        /// The trigger topic.
        topic: String,
        /// Its level count.
        levels: usize,
    },
    /// The expansion is not a valid topic name.
    #[error("topic template expands to an invalid topic")]
    Invalid(#[from] TopicError),
}

/// Expands `{N}` placeholders in `template` with level `N` (from 0) of `trigger`.
///
/// `alerts/{1}` with trigger `sensors/dev-7/temperature` gives `alerts/dev-7`. Text without
/// placeholders is returned as it is (once validated).
pub fn expand_template(template: &str, trigger: &str) -> Result<TopicName, TemplateError> {
    if !template.contains('{') {
        return Ok(TopicName::new(template)?);
    }
    let levels: Vec<&str> = trigger.split('/').collect();
    let mut out = String::with_capacity(template.len() + trigger.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| TemplateError::BadPlaceholder(template.to_owned()))?;
        let level: usize = after[..close]
            .parse()
            .map_err(|_| TemplateError::BadPlaceholder(template.to_owned()))?;
        let value = levels
            .get(level)
            .ok_or_else(|| TemplateError::NoSuchLevel {
                level,
                topic: trigger.to_owned(),
                levels: levels.len(),
            })?;
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(TopicName::new(&out)?)
}

#[cfg(test)]
mod tests {

    #[test]
    fn shared_subscriptions_parse_and_match_their_filter() {
        let f = TopicFilter::new("$share/workers/jobs/+").unwrap();
        assert_eq!(f.share_group(), Some("workers"));
        assert_eq!(f.pattern(), "jobs/+");
        assert!(f.has_wildcards());
        assert!(f.matches(&TopicName::new("jobs/a").unwrap()));
        assert!(!f.matches(&TopicName::new("$share/workers/jobs/a").unwrap()));
        let hash = TopicFilter::new("$share/g/#").unwrap();
        assert!(!hash.matches(&TopicName::new("$SYS/x").unwrap()));
        assert_eq!(TopicFilter::new("a/+").unwrap().share_group(), None);
        for bad in [
            "$share/",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/#/a",
            "$share/g/a#",
        ] {
            assert!(TopicFilter::new(bad).is_err(), "{bad}");
        }
        // "$shared/..." and "$share" alone are ordinary filters.
        assert_eq!(TopicFilter::new("$shared/x").unwrap().share_group(), None);
        let plain = TopicFilter::new("$share").unwrap();
        assert_eq!(plain.share_group(), None);
        assert!(plain.matches(&TopicName::new("$share").unwrap()));
        assert!(!plain.matches(&TopicName::new("share").unwrap()));
    }

    use super::*;
    use proptest::prelude::*;

    fn m(filter: &str, topic: &str) -> bool {
        TopicFilter::new(filter)
            .unwrap()
            .matches(&TopicName::new(topic).unwrap())
    }

    #[test]
    fn spec_examples() {
        // MQTT 3.1.1 §4.7.1.2
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
        assert!(m(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(m("sport/#", "sport"));
        assert!(m("#", "sport/tennis"));
        // §4.7.1.3
        assert!(m("sport/tennis/+", "sport/tennis/player1"));
        assert!(!m("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(m("sport/+", "sport/"));
        assert!(!m("sport/+", "sport"));
        assert!(m("+/+", "/finance"));
        assert!(m("/+", "/finance"));
        assert!(!m("+", "/finance"));
        // §4.7.2
        assert!(!m("#", "$SYS/broker/clients"));
        assert!(!m("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(m("$SYS/#", "$SYS/broker/clients"));
        assert!(m("$SYS/monitor/+", "$SYS/monitor/Clients"));
        // Case and empty levels are significant.
        assert!(!m("ACCOUNTS", "Accounts"));
        assert!(m("a//b", "a//b"));
        assert!(!m("a/b", "a//b"));
    }

    #[test]
    fn invalid_filters_and_names() {
        for (f, e) in [
            ("", TopicError::Empty),
            ("a/b#", TopicError::MisplacedHash { level: 1 }),
            ("#/a", TopicError::MisplacedHash { level: 0 }),
            ("a/#/b", TopicError::MisplacedHash { level: 1 }),
            ("a+", TopicError::MisplacedPlus { level: 0 }),
            ("a/+b/c", TopicError::MisplacedPlus { level: 1 }),
            ("a\0b", TopicError::Nul),
        ] {
            assert_eq!(TopicFilter::new(f), Err(e), "{f:?}");
        }
        assert!(TopicFilter::new("+/+/#").is_ok());
        assert!(TopicFilter::new("/").is_ok());
        assert_eq!(TopicName::new("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::new("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(TopicName::new(""), Err(TopicError::Empty));
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(
            TopicName::new(&long),
            Err(TopicError::TooLong(MAX_TOPIC_LEN + 1))
        );
        assert!(TopicName::new(&long[1..]).is_ok());
    }

    #[test]
    fn templates() {
        let t = "sensors/dev-7/temperature";
        assert_eq!(
            expand_template("alerts/{1}", t).unwrap().as_str(),
            "alerts/dev-7"
        );
        assert_eq!(
            expand_template("x/{2}/{0}", t).unwrap().as_str(),
            "x/temperature/sensors"
        );
        assert_eq!(expand_template("fixed", t).unwrap().as_str(), "fixed");
        assert!(matches!(
            expand_template("a/{9}", t),
            Err(TemplateError::NoSuchLevel { level: 9, .. })
        ));
        assert!(matches!(
            expand_template("a/{x}", t),
            Err(TemplateError::BadPlaceholder(_))
        ));
        assert!(matches!(
            expand_template("a/{1", t),
            Err(TemplateError::BadPlaceholder(_))
        ));
        assert!(matches!(
            expand_template("a/#", t),
            Err(TemplateError::Invalid(_))
        ));
    }

    /// A reference matcher written independently: recursive over level vectors.
    fn reference(filter: &[&str], topic: &[&str], first: bool) -> bool {
        if first
            && topic.first().is_some_and(|l| l.starts_with('$'))
            && filter.first().is_some_and(|l| *l == "+" || *l == "#")
        {
            return false;
        }
        match (filter.split_first(), topic.split_first()) {
            (None, None) => true,
            (Some((&"#", _)), _) => true,
            (Some((&"+", fr)), Some((_, tr))) => reference(fr, tr, false),
            (Some((f, fr)), Some((t, tr))) => f == t && reference(fr, tr, false),
            _ => false,
        }
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("$s".to_owned())
        ]
    }

    fn filter_level() -> impl Strategy<Value = String> {
        prop_oneof![level(), Just("+".to_owned())]
    }

    proptest! {
        #[test]
        fn matches_like_the_reference(
            topic in proptest::collection::vec(level(), 1..5),
            mut filter in proptest::collection::vec(filter_level(), 1..5),
            hash in any::<bool>(),
        ) {
            if hash { filter.push("#".to_owned()); }
            let (t, f) = (topic.join("/"), filter.join("/"));
            prop_assume!(!t.is_empty() && !f.is_empty());
            let name = TopicName::new(&t).unwrap();
            let flt = TopicFilter::new(&f).unwrap();
            let tl: Vec<&str> = t.split('/').collect();
            let fl: Vec<&str> = f.split('/').collect();
            prop_assert_eq!(flt.matches(&name), reference(&fl, &tl, true), "{} vs {}", f, t);
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,40}") {
            let _ = TopicName::new(&text);
            let _ = TopicFilter::new(&text);
            let _ = expand_template(&text, "a/b/c");
        }
    }
}
