//! What the broker knows of bridges (the `bridge` module runs them): which sessions are a
//! bridge's own, and the path of brokers a message crossed bridges at, by which bridged
//! brokers break loops.

use crate::protocol::UserProperties;

/// Client ids of the bridges' local sessions start with this; clients may not use it.
pub const LOCAL_ID_PREFIX: &str = "$bridge/";

/// User property naming, comma-separated, the brokers where a message crossed a bridge.
pub const PATH_PROPERTY: &str = "tern-bridge-path";

/// Whether `client_id` names a bridge's local session (reserved: a client could otherwise take
/// one over).
pub fn is_bridge_session(client_id: &str) -> bool {
    client_id.starts_with(LOCAL_ID_PREFIX)
}

/// Whether a message with these user properties has crossed a bridge at broker `id` already.
pub fn visited(user_properties: &UserProperties, id: &str) -> bool {
    user_properties
        .iter()
        .any(|(k, v)| k == PATH_PROPERTY && v.split(',').any(|b| b == id))
}

/// Adds broker `id` to a message's path.
pub fn add_to_path(user_properties: &mut UserProperties, id: &str) {
    match user_properties.iter_mut().find(|(k, _)| k == PATH_PROPERTY) {
        Some((_, v)) => {
            v.push(',');
            v.push_str(id);
        }
        None => user_properties.push((PATH_PROPERTY.to_string(), id.to_string())),
    }
}
