//! One partner's contacts (pure): the record, the changes a write asks for (absent keys
//! keep their value, `null` clears, unknown keys are refused), and the store in
//! (`updated_at` ms, id) order that the crate's updated-since listing pages.

use serde_json::{json, Map, Value};

use crate::listing::{iso_millis, Ordered, OrderedStore};

/// Who made a contact's latest change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    /// A client of the contacts API.
    Api,
    /// A person on the platform (the control API).
    User,
}

impl Writer {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Writer::Api => "api",
            Writer::User => "user",
        }
    }
}

/// The fields a write may change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fields {
    pub(crate) email: Option<String>,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) subscribed: bool,
}

/// One contact.
#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub(crate) id: String,
    pub(crate) fields: Fields,
    /// Unix ms; strictly increases with each change.
    pub(crate) updated_at_ms: u64,
    /// 1 when created, + 1 per change.
    pub(crate) version: u64,
    pub(crate) updated_by: Writer,
}

impl Contact {
    pub(crate) fn to_json(&self) -> Value {
        let fields = &self.fields;
        json!({
            "id": self.id,
            "email": fields.email,
            "first_name": fields.first_name,
            "last_name": fields.last_name,
            "tags": fields.tags,
            "subscribed": fields.subscribed,
            "updated_at": iso_millis(self.updated_at_ms),
            "version": self.version,
            "updated_by": self.updated_by.name(),
        })
    }
}

impl Ordered for Contact {
    const TIME_UNIT_MS: u64 = 1;

    fn id(&self) -> &str {
        &self.id
    }
    fn order_time(&self) -> u64 {
        self.updated_at_ms
    }
}

/// A partner's contacts in listing order.
pub(crate) type ContactStore = OrderedStore<Contact>;

/// What one write changes: `None` keeps a field; `Some(None)` (from `null`) clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    email: Option<Option<String>>,
    first_name: Option<Option<String>>,
    last_name: Option<Option<String>>,
    tags: Option<Vec<String>>,
    subscribed: Option<bool>,
}

fn text(key: &str, value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        other => Err(format!("{key} must be a string or null, not {other}")),
    }
}

impl Changes {
    /// The changes of a JSON object of `email`, `first_name`, `last_name`, `tags` (strings),
    /// `subscribed`; any other key is refused.
    pub(crate) fn parse(body: &Map<String, Value>) -> Result<Changes, String> {
        let mut changes = Changes::default();
        for (key, value) in body {
            match key.as_str() {
                "email" => changes.email = Some(text(key, value)?),
                "first_name" => changes.first_name = Some(text(key, value)?),
                "last_name" => changes.last_name = Some(text(key, value)?),
                "tags" => {
                    let tags = match value {
                        Value::Null => Vec::new(),
                        Value::Array(items) => items
                            .iter()
                            .map(|item| item.as_str().map(str::to_owned))
                            .collect::<Option<Vec<String>>>()
                            .ok_or("tags must be an array of strings")?,
                        other => return Err(format!("tags must be an array or null, not {other}")),
                    };
                    changes.tags = Some(tags);
                }
                "subscribed" => {
                    let subscribed = match value {
                        Value::Null => false,
                        Value::Bool(subscribed) => *subscribed,
                        other => {
                            return Err(format!(
                                "subscribed must be a boolean or null, not {other}"
                            ))
                        }
                    };
                    changes.subscribed = Some(subscribed);
                }
                other => return Err(format!("unknown key {other:?}")),
            }
        }
        Ok(changes)
    }

    /// The changes of a body that may also carry `id`: it must then be `id` (a write names
    /// its contact in the path).
    pub(crate) fn parse_for(id: &str, body: &Value) -> Result<Changes, String> {
        let Value::Object(body) = body else {
            return Err("the body must be a JSON object".into());
        };
        let mut body = body.clone();
        match body.remove("id") {
            None => {}
            Some(Value::String(given)) if given == id => {}
            Some(other) => return Err(format!("id {other} does not match the path's {id:?}")),
        }
        Changes::parse(&body)
    }

    pub(crate) fn apply(&self, fields: &mut Fields) {
        let Changes {
            email,
            first_name,
            last_name,
            tags,
            subscribed,
        } = self.clone();
        if let Some(email) = email {
            fields.email = email;
        }
        if let Some(first_name) = first_name {
            fields.first_name = first_name;
        }
        if let Some(last_name) = last_name {
            fields.last_name = last_name;
        }
        if let Some(tags) = tags {
            fields.tags = tags;
        }
        if let Some(subscribed) = subscribed {
            fields.subscribed = subscribed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::SinceListing;

    fn changes(body: Value) -> Result<Changes, String> {
        Changes::parse_for("c-1", &body)
    }

    #[test]
    fn absent_keys_keep_null_clears_and_unknown_keys_are_refused() {
        // Goal: a write changes only the keys it gives; null clears (tags → [], subscribed →
        // false); a matching id is allowed, another id, an unknown key or a wrong type not.
        let mut fields = Fields {
            email: Some("a@example.org".into()),
            first_name: Some("Ann".into()),
            last_name: Some("Lee".into()),
            tags: vec!["donor".into()],
            subscribed: true,
        };
        changes(json!({"id": "c-1", "first_name": "Anne", "last_name": null}))
            .unwrap()
            .apply(&mut fields);
        assert_eq!(fields.first_name.as_deref(), Some("Anne"));
        assert_eq!(fields.last_name, None);
        assert_eq!(fields.email.as_deref(), Some("a@example.org"));
        changes(json!({"tags": null, "subscribed": null}))
            .unwrap()
            .apply(&mut fields);
        assert_eq!((fields.tags.len(), fields.subscribed), (0, false));
        for bad in [
            json!({"id": "c-2"}),
            json!({"phone": "1"}),
            json!({"email": 3}),
            json!({"tags": [1]}),
            json!({"subscribed": "yes"}),
            json!([]),
        ] {
            assert!(changes(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn contacts_page_by_milliseconds_and_show_their_shape() {
        // Goal: the listing orders by updated_at in ms (≥ since, to the millisecond) and a
        // contact serializes with ms timestamps.
        let mut store = ContactStore::default();
        for (id, at_ms) in [("a", 1_000), ("b", 1_001), ("c", 1_001), ("d", 1_002)] {
            store.put(Contact {
                id: id.into(),
                fields: Fields::default(),
                updated_at_ms: at_ms,
                version: 1,
                updated_by: Writer::User,
            });
        }
        let listing = SinceListing {
            updated_since_ms: Some(1_001),
            limit: 2,
            after: None,
        };
        let (first, next) = store.since_page(&listing);
        let ids: Vec<&str> = first.iter().map(|contact| contact.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        let (rest, next) = store.since_page(&next.unwrap());
        assert_eq!((rest.len(), rest[0].id.as_str(), next), (1, "d", None));
        let json = rest[0].to_json();
        assert_eq!(json["updated_at"], "1970-01-01T00:00:01.002Z");
        assert_eq!(json["updated_by"], "user");
        assert_eq!(json["tags"], json!([]));
    }
}
