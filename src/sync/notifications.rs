//! `GET /notifications`: a page of the events that notified a user, newest first, each in
//! its client form with its actions and whether it was read. The room service records
//! notifications as it stores events ([`crate::rooms::notifications`]); this reads them
//! back, like `/sync` reads timelines.

use ruma::UserId;
use serde_json::{Value, json};

use super::SyncService;
use crate::error::Error;
use crate::rooms;

impl SyncService {
    /// Up to `limit` notifications before the stream position `before` (the newest
    /// without it), only highlights if asked; `next_token` names the page after.
    pub(crate) fn notifications(
        &self,
        user_id: &UserId,
        before: Option<u64>,
        limit: usize,
        only_highlights: bool,
    ) -> Result<Value, Error> {
        let page =
            rooms::notifications::list(&self.storage, user_id, before, limit, only_highlights)?;
        let mut notifications = Vec::new();
        for notification in &page.notifications {
            let Some(event) = rooms::format::stored_event_for_client(
                &self.storage,
                &notification.record.event_id,
                Some(&notification.record.room_id),
                None,
            )?
            else {
                continue;
            };
            notifications.push(json!({
                "actions": notification.record.actions,
                "event": event,
                "read": notification.read,
                "room_id": notification.record.room_id,
                "ts": notification.record.ts,
            }));
        }
        let mut response = json!({ "notifications": notifications });
        if let Some(next) = page.next {
            response["next_token"] = json!(next.to_string());
        }
        Ok(response)
    }
}
