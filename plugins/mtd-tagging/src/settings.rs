//! The instance's configuration, read and checked once per invocation.

use switchyard_sdk::config::{Ranges, Values, range_of};
use switchyard_sdk::{ConfigSpec, json};

/// Every optional key: (key, default, description).
pub const DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "groups",
        "",
        "UEM organization group ids whose devices are synced, comma-separated (a parent does not include its children)",
    ),
    (
        "smart_groups",
        "",
        "UEM smart group ids whose devices are synced, comma-separated",
    ),
    (
        "android_enterprise_groups",
        "",
        "Of those, the ids whose devices have work and personal profiles (Android Enterprise)",
    ),
    (
        "import_pii",
        "true",
        "Send device names and owner emails (false: none leave UEM; the owner becomes UEMDevice<UDID>@vendor.UEM)",
    ),
    (
        "deletion_threshold_pct",
        "20",
        "Delete nothing in a sync that would delete more than this share of the devices (0-100; 100: no threshold)",
    ),
    (
        "delete_after_syncs",
        "3",
        "Delete a device after this many consecutive syncs that did not find it (1-100)",
    ),
    (
        "tag_status",
        "true",
        "Tag each device with its status (true/false)",
    ),
    (
        "tag_risk",
        "true",
        "Tag each device with its risk level (true/false)",
    ),
    (
        "tag_threats",
        "false",
        "Tag each device with its threat factors (true/false)",
    ),
    (
        "status_tags",
        "CHKP_Status_Provisioned,CHKP_Status_Active,CHKP_Status_Inactive",
        "Tag names for provisioned, active, inactive",
    ),
    (
        "risk_tags",
        "CHKP_Risk_High,CHKP_Risk_Medium,CHKP_Risk_Low",
        "Tag names for high, medium, low risk",
    ),
    (
        "threat_tag_prefix",
        "CHKP_Threat_",
        "Threat-factor tags are this prefix and the factor's name",
    ),
    (
        "tag_group",
        "",
        "Organization group id tags are created in (default: the top-level group)",
    ),
];

/// A UEM group id (a positive number), as a list item.
const GROUP_ID: &str = "^[1-9][0-9]{0,17}$";

/// A UEM tag name: letters, digits, `_ - .` and spaces, at most 64.
const TAG_NAME: &str = "^[A-Za-z0-9_. -]{1,64}$";

/// The whole-number keys and their ranges, in one table: what `check`
/// refuses (through [`spec`]) and what [`Settings::read`] accepts.
const RANGES: Ranges = &[
    ("deletion_threshold_pct", 0, 100),
    ("delete_after_syncs", 1, 100),
];

/// The manifest's entry for the optional key `key`, with the values it
/// accepts, so that `switchyard check` refuses what [`Settings::read`]
/// would (the rules that involve two keys are left to `read`).
pub fn spec(key: &str, default: &str, description: &str) -> ConfigSpec {
    let spec = ConfigSpec::optional(key, description, default);
    if let Some((min, max)) = range_of(RANGES, key) {
        return spec.integer(min, max);
    }
    let list = |items: &str, len: Option<u32>| {
        let mut schema = json!({ "type": "array", "items": { "pattern": items } });
        if let Some(n) = len {
            schema["minItems"] = n.into();
            schema["maxItems"] = n.into();
        }
        schema
    };
    match key {
        "groups" | "smart_groups" | "android_enterprise_groups" => spec
            .schema(list(GROUP_ID, None))
            .described("a UEM group id (a positive number)"),
        "import_pii" | "tag_status" | "tag_risk" | "tag_threats" => spec.boolean(),
        "status_tags" | "risk_tags" => spec
            .schema(list(TAG_NAME, Some(3)))
            .described("a tag name (letters, digits, _ - . and spaces, at most 64)"),
        "threat_tag_prefix" => spec
            .pattern("^[A-Za-z0-9_. -]{0,63}$")
            .described("a tag name prefix (letters, digits, _ - . and spaces, at most 63)"),
        "tag_group" => spec
            .pattern("^([1-9][0-9]{0,17})?$")
            .described("a UEM organization group id (a positive number), or empty"),
        _ => spec,
    }
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// UEM API base URL.
    pub api_url: String,
    /// MTD service base URL.
    pub mtd_url: String,
    /// Organization groups.
    pub groups: Vec<i64>,
    /// Smart groups.
    pub smart_groups: Vec<i64>,
    /// Android Enterprise groups (of the two above).
    pub android_enterprise: Vec<i64>,
    /// Whether PII leaves UEM.
    pub import_pii: bool,
    /// Deletion threshold, percent.
    pub threshold_pct: u32,
    /// Consecutive missing syncs before deletion.
    pub delete_after: u32,
    /// Tag switches.
    pub tag_status: bool,
    /// Tag switches.
    pub tag_risk: bool,
    /// Tag switches.
    pub tag_threats: bool,
    /// provisioned, active, inactive.
    pub status_tags: [String; 3],
    /// high, medium, low.
    pub risk_tags: [String; 3],
    /// Threat tag prefix.
    pub threat_prefix: String,
    /// Where tags are created; None: the top-level group.
    pub tag_group: Option<i64>,
}

fn ids(key: &str, v: &str) -> Result<Vec<i64>, String> {
    v.split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{key}: `{s}` is not a group id (a positive number)"))
        })
        .collect()
}

fn flag(key: &str, v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        other => Err(format!("{key}: `{other}` is not true or false")),
    }
}

fn number(key: &str, v: &str, min: u32, max: u32) -> Result<u32, String> {
    match v.trim().parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{key}: `{}` is not a number from {min} to {max}",
            v.trim()
        )),
    }
}

/// A UEM tag name: letters, digits, `_ - .` and spaces, at most 64.
fn tag_name(key: &str, v: &str) -> Result<String, String> {
    let v = v.trim();
    if !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b' '))
    {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "{key}: `{v}` is not a tag name (letters, digits, _ - . and spaces, at most 64)"
        ))
    }
}

fn three(key: &str, v: &str) -> Result<[String; 3], String> {
    let names: Vec<String> = v
        .split([',', ';'])
        .map(|n| tag_name(key, n))
        .collect::<Result<_, _>>()?;
    <[String; 3]>::try_from(names)
        .map_err(|n| format!("{key}: needs three tag names, got {}", n.len()))
}

impl Settings {
    /// Reads and checks every key; the error names the key and the value.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let v = Values::new(get, DEFAULTS);
        let value = |key: &str| v.text(key);
        let ranged = |key: &str| {
            let (min, max) = range_of(RANGES, key)
                .ok_or_else(|| format!("{key}: no range is declared for it"))?;
            number(key, &value(key), min as u32, max as u32)
        };
        let groups = ids("groups", &value("groups"))?;
        let smart_groups = ids("smart_groups", &value("smart_groups"))?;
        if groups.is_empty() && smart_groups.is_empty() {
            return Err(
                "groups: name at least one organization group or smart group to sync".into(),
            );
        }
        let android_enterprise = ids(
            "android_enterprise_groups",
            &value("android_enterprise_groups"),
        )?;
        if let Some(g) = android_enterprise
            .iter()
            .find(|g| !groups.contains(g) && !smart_groups.contains(g))
        {
            return Err(format!(
                "android_enterprise_groups: {g} is not one of the synced groups"
            ));
        }
        let tag_group = match value("tag_group").trim() {
            "" => None,
            v => Some(ids("tag_group", v)?.into_iter().next().unwrap_or_default()),
        };
        let threat_prefix = value("threat_tag_prefix");
        tag_name("threat_tag_prefix", &format!("{threat_prefix}x"))?;
        Ok(Self {
            api_url: v.url("api_url")?,
            mtd_url: v.url("mtd_url")?,
            groups,
            smart_groups,
            android_enterprise,
            import_pii: flag("import_pii", &value("import_pii"))?,
            threshold_pct: ranged("deletion_threshold_pct")?,
            delete_after: ranged("delete_after_syncs")?,
            tag_status: flag("tag_status", &value("tag_status"))?,
            tag_risk: flag("tag_risk", &value("tag_risk"))?,
            tag_threats: flag("tag_threats", &value("tag_threats"))?,
            status_tags: three("status_tags", &value("status_tags"))?,
            risk_tags: three("risk_tags", &value("risk_tags"))?,
            threat_prefix: threat_prefix.trim().to_owned(),
            tag_group,
        })
    }

    /// The status tag for an MTD status.
    pub fn status_tag(&self, status: &str) -> Option<&str> {
        match status {
            "provisioned" => Some(&self.status_tags[0]),
            "active" => Some(&self.status_tags[1]),
            "inactive" => Some(&self.status_tags[2]),
            _ => None,
        }
        .map(String::as_str)
    }

    /// The risk tag for an MTD risk level (`none` has none).
    pub fn risk_tag(&self, risk: &str) -> Option<&str> {
        match risk {
            "high" => Some(&self.risk_tags[0]),
            "medium" => Some(&self.risk_tags[1]),
            "low" => Some(&self.risk_tags[2]),
            _ => None,
        }
        .map(String::as_str)
    }

    /// The tag for a threat factor, if the factor can name one.
    pub fn threat_tag(&self, factor: &str) -> Option<String> {
        tag_name("threat", &format!("{}{factor}", self.threat_prefix)).ok()
    }

    /// Every tag this configuration manages, given the threat factors seen.
    pub fn managed(&self, name: &str) -> bool {
        (self.tag_status && self.status_tags.iter().any(|t| t == name))
            || (self.tag_risk && self.risk_tags.iter().any(|t| t == name))
            || (self.tag_threats && name.starts_with(&self.threat_prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        let mut all = pairs.to_vec();
        all.extend_from_slice(&[
            ("api_url", "https://as1.awmdm.com/"),
            ("mtd_url", "https://mtd.example"),
            ("groups", "571, 572"),
        ]);
        Settings::read(|k| {
            all.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn defaults_are_the_seeds() {
        let s = with(&[]).unwrap();
        assert_eq!(s.groups, [571, 572]);
        assert!(s.import_pii && s.tag_status && s.tag_risk && !s.tag_threats);
        assert_eq!((s.threshold_pct, s.delete_after), (20, 3));
        assert_eq!(s.risk_tag("high"), Some("CHKP_Risk_High"));
        assert_eq!(s.risk_tag("none"), None);
        assert_eq!(s.status_tag("inactive"), Some("CHKP_Status_Inactive"));
        assert_eq!(
            s.threat_tag("jailbreak").as_deref(),
            Some("CHKP_Threat_jailbreak")
        );
        assert_eq!(s.threat_tag("a/b"), None);
        assert!(s.managed("CHKP_Risk_Low") && !s.managed("CHKP_Threat_x") && !s.managed("Other"));
    }

    #[test]
    fn bad_values_are_named() {
        for (pairs, needle) in [
            (vec![("groups", ""), ("smart_groups", "")], "at least one"),
            (vec![("groups", "x")], "groups: `x`"),
            (
                vec![("deletion_threshold_pct", "101")],
                "deletion_threshold_pct",
            ),
            (vec![("delete_after_syncs", "0")], "delete_after_syncs"),
            (vec![("import_pii", "maybe")], "import_pii"),
            (vec![("risk_tags", "a,b")], "three tag names"),
            (vec![("status_tags", "a,b/c,d")], "status_tags"),
            (
                vec![("android_enterprise_groups", "999")],
                "999 is not one of",
            ),
            (vec![("mtd_url", "x")], "mtd_url"),
        ] {
            let err = with(&pairs).unwrap_err();
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
    }
}
