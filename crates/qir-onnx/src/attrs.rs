//! Typed access to a node's attributes. Every converter names the attributes it
//! understands; any other attribute on the node is an error (an attribute the importer
//! ignored could change what the node computes).

use std::collections::BTreeMap;

use crate::proto::attribute_proto::AttributeType;
use crate::proto::{AttributeProto, NodeProto, TensorProto};

/// The attributes of one node, checked against the names a converter accepts.
pub struct NodeAttrs<'a> {
    map: BTreeMap<&'a str, &'a AttributeProto>,
}

fn kind_of(a: &AttributeProto) -> Option<AttributeType> {
    match a.r#type.map(AttributeType::try_from) {
        Some(Ok(AttributeType::Undefined)) | None => {
            // IR version 1 files may leave the type out: infer it from the field set.
            if a.f.is_some() {
                Some(AttributeType::Float)
            } else if a.i.is_some() {
                Some(AttributeType::Int)
            } else if a.s.is_some() {
                Some(AttributeType::String)
            } else if a.t.is_some() {
                Some(AttributeType::Tensor)
            } else if !a.floats.is_empty() {
                Some(AttributeType::Floats)
            } else if !a.ints.is_empty() {
                Some(AttributeType::Ints)
            } else {
                None
            }
        }
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => None,
    }
}

impl<'a> NodeAttrs<'a> {
    /// The attributes of `node`; an attribute outside `accepted`, one given twice, or a
    /// reference to a function's attribute is an error.
    pub fn new(node: &'a NodeProto, accepted: &[&str]) -> Result<NodeAttrs<'a>, String> {
        let mut map = BTreeMap::new();
        for a in &node.attribute {
            let name = a.name.as_deref().unwrap_or("");
            if a.ref_attr_name.is_some() {
                return Err(format!(
                    "attribute '{name}' refers to a function attribute, which is not supported"
                ));
            }
            if !accepted.contains(&name) {
                return Err(if accepted.is_empty() {
                    format!(
                        "unexpected attribute '{name}' (the importer knows of none for this op)"
                    )
                } else {
                    format!(
                        "unexpected attribute '{name}' (the importer knows: {})",
                        accepted.join(", ")
                    )
                });
            }
            if map.insert(name, a).is_some() {
                return Err(format!("attribute '{name}' is given twice"));
            }
        }
        Ok(NodeAttrs { map })
    }

    fn get(&self, name: &str, want: AttributeType) -> Result<Option<&'a AttributeProto>, String> {
        let Some(&a) = self.map.get(name) else {
            return Ok(None);
        };
        match kind_of(a) {
            Some(k) if k == want => Ok(Some(a)),
            Some(k) => Err(format!(
                "attribute '{name}' is {}, expected {}",
                k.as_str_name(),
                want.as_str_name()
            )),
            // An untyped, empty list: whichever list kind was asked for.
            None if matches!(want, AttributeType::Ints | AttributeType::Floats) => Ok(Some(a)),
            None => Err(format!("attribute '{name}' has no value")),
        }
    }

    /// True if the attribute is present.
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Result<Option<i64>, String> {
        Ok(self.get(name, AttributeType::Int)?.and_then(|a| a.i))
    }
    /// An integer attribute with its default.
    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, String> {
        Ok(self.int(name)?.unwrap_or(default))
    }
    /// A 0/1 flag (any other value is an error).
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, String> {
        match self.int(name)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(v) => Err(format!("attribute '{name}' must be 0 or 1, found {v}")),
        }
    }
    /// A float attribute with its default.
    pub fn float_or(&self, name: &str, default: f32) -> Result<f32, String> {
        Ok(self
            .get(name, AttributeType::Float)?
            .and_then(|a| a.f)
            .unwrap_or(default))
    }
    /// An integer list attribute.
    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        Ok(self.get(name, AttributeType::Ints)?.map(|a| a.ints.clone()))
    }
    /// A float list attribute.
    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, String> {
        Ok(self
            .get(name, AttributeType::Floats)?
            .map(|a| a.floats.clone()))
    }
    /// A string attribute (UTF-8).
    pub fn string(&self, name: &str) -> Result<Option<String>, String> {
        match self.get(name, AttributeType::String)? {
            None => Ok(None),
            Some(a) => String::from_utf8(a.s.clone().unwrap_or_default())
                .map(Some)
                .map_err(|_| format!("attribute '{name}' is not UTF-8 text")),
        }
    }
    /// A tensor attribute.
    pub fn tensor(&self, name: &str) -> Result<Option<&'a TensorProto>, String> {
        Ok(self
            .get(name, AttributeType::Tensor)?
            .and_then(|a| a.t.as_ref()))
    }
}
