//! CleverTap data regions. Each region has its own tables; a project's data rests only in its home region.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Region {
    Eu1,
    In1,
    Sg1,
    Us1,
    Aps3,
    Mec1,
    Sk1,
}

impl Region {
    pub const ALL: [Region; 7] = [
        Region::Eu1,
        Region::In1,
        Region::Sg1,
        Region::Us1,
        Region::Aps3,
        Region::Mec1,
        Region::Sk1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Region::Eu1 => "eu1",
            Region::In1 => "in1",
            Region::Sg1 => "sg1",
            Region::Us1 => "us1",
            Region::Aps3 => "aps3",
            Region::Mec1 => "mec1",
            Region::Sk1 => "sk1",
        }
    }

    /// The AWS region that hosts this CleverTap region's stack.
    pub fn aws_region(self) -> &'static str {
        match self {
            Region::Eu1 => "eu-west-1",
            Region::In1 => "ap-south-1",
            Region::Sg1 => "ap-southeast-1",
            Region::Us1 => "us-east-1",
            Region::Aps3 => "ap-southeast-3",
            Region::Mec1 => "me-central-1",
            Region::Sk1 => "ap-northeast-2",
        }
    }

    /// Reads a region as customers type it into mParticle's form: spaces and case are ignored.
    pub fn parse(input: &str) -> Option<Region> {
        let wanted = input.trim().to_ascii_lowercase();
        Region::ALL.into_iter().find(|r| r.as_str() == wanted)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown region {0:?} (expected one of eu1, in1, sg1, us1, aps3, mec1, sk1)")]
pub struct UnknownRegion(pub String);

impl serde::Serialize for Region {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Region {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        Region::parse(&s).ok_or_else(|| serde::de::Error::custom(UnknownRegion(s)))
    }
}

impl FromStr for Region {
    type Err = UnknownRegion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Region::parse(s).ok_or_else(|| UnknownRegion(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_and_space_insensitively() {
        assert_eq!(Region::parse(" EU1 "), Some(Region::Eu1));
        assert_eq!(Region::parse("Aps3"), Some(Region::Aps3));
        assert_eq!(Region::parse("eu"), None);
        assert_eq!(Region::parse(""), None);
        for r in Region::ALL {
            assert_eq!(r.as_str().parse::<Region>(), Ok(r));
        }
    }
}
