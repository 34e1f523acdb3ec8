//! `/api/join/{token}`: a patient's or guest's link, exchanged for a
//! short-lived join token; and the patient's questionnaire.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use teleconsult_protocol::{Role, ServerMessage};

use crate::api_extract::ApiJson;
use crate::app::App;
use crate::http_error::ApiError;
use crate::questionnaire::Answers;
use crate::staff_auth::token_hash;
use crate::store::{Link, LinkRole, Visit, VisitStatus};
use crate::timefmt::rfc3339;
use crate::visit_rooms::audit_event;

/// How long a join token from a link lasts. The seat it takes lasts longer
/// (resume); the token only has to reach the WebSocket.
pub const LINK_JOIN_TOKEN_TTL: u64 = 15 * 60;

/// Resolves a link token to its link and visit, checking every rule, each
/// with its own code so the page can explain it in plain words.
async fn resolve(app: &App, token: &str) -> Result<(Link, Visit), ApiError> {
    let unknown = || ApiError::new(StatusCode::NOT_FOUND, "link_unknown", "this link is not known");
    // Our tokens are 43 base64url characters; anything else is unknown without a lookup.
    if token.len() != 43 || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(unknown());
    }
    let link = app.store.link_by_token_hash(&token_hash(token)).await?.ok_or_else(unknown)?;
    let visit = app.store.visit_by_id(&link.visit_id).await?.ok_or_else(unknown)?;
    let now = app.clock.now();
    if link.revoked_at.is_some() || visit.status == VisitStatus::Cancelled {
        return Err(ApiError::new(StatusCode::GONE, "link_revoked", "this link has been withdrawn"));
    }
    if link.denied_at.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "link_denied",
            "the clinician has turned this link away; contact the care team",
        ));
    }
    if visit.status == VisitStatus::Completed {
        return Err(ApiError::new(StatusCode::GONE, "visit_ended", "this visit is over"));
    }
    // A visit marked as missed: for the patient, its time has passed, as
    // for an expired link (and the page says to contact the care team).
    if visit.status == VisitStatus::NoShow {
        return Err(ApiError::new(StatusCode::GONE, "link_expired", "this link has expired"));
    }
    // A visit its clinician has already started is open to its links.
    if now < link.valid_from && visit.status != VisitStatus::InProgress {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "link_not_yet_valid", "this link opens later").with_details(
            json!({ "valid_from": rfc3339(link.valid_from), "scheduled_start": rfc3339(visit.scheduled_start) }),
        ));
    }
    if now > link.valid_until {
        return Err(ApiError::new(StatusCode::GONE, "link_expired", "this link has expired"));
    }
    Ok((link, visit))
}

/// `POST /api/join/{token}`
pub async fn exchange(State(app): State<Arc<App>>, Path(token): Path<String>) -> Result<Json<Value>, ApiError> {
    let (link, visit) = resolve(&app, &token).await?;
    let clinician = app.store.clinician_by_id(&visit.clinician_id).await?;
    let (role, name) = match link.role {
        LinkRole::Patient => {
            let patient = app.store.patient_by_id(&visit.patient_id).await?;
            (Role::Patient, patient.map(|p| p.display_name).unwrap_or_else(|| "Patient".into()))
        }
        LinkRole::Guest => (Role::Guest, link.label.clone().unwrap_or_else(|| "Guest".into())),
    };
    let join_token = app
        .keys
        .mint_join(
            &visit.id,
            role,
            &name,
            &format!("link:{}", link.id),
            crate::join_token::unix_now(),
            LINK_JOIN_TOKEN_TTL,
            false,
        )
        .map_err(ApiError::internal)?;
    app.store.audit(&audit_event(&app, &format!("link:{}", link.id), "link_used", &visit.id, None)).await?;
    app.metrics.link_opened(&link.id);
    Ok(Json(json!({
        "join_token": join_token,
        "expires_in": LINK_JOIN_TOKEN_TTL,
        "role": role,
        "display_name": name,
        "visit": {
            "id": visit.id,
            "kind": visit.kind,
            "status": visit.status,
            "scheduled_start": rfc3339(visit.scheduled_start),
            "scheduled_end": rfc3339(visit.scheduled_end()),
            "clinician": clinician.map(|c| json!({"display_name": c.display_name, "specialty": c.specialty})),
        },
        "questionnaire_answered": visit.questionnaire.is_some(),
    })))
}

/// `POST /api/join/{token}/questionnaire`: the patient's answers, stored
/// with the visit and shown to its clinician at once if they are waiting.
pub async fn questionnaire(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    ApiJson(answers): ApiJson<Answers>,
) -> Result<Json<Value>, ApiError> {
    let (link, visit) = resolve(&app, &token).await?;
    if link.role != LinkRole::Patient {
        return Err(ApiError::forbidden());
    }
    answers.validate().map_err(|why| ApiError::invalid("questionnaire", why))?;
    let value = serde_json::to_value(&answers).map_err(ApiError::internal)?;
    app.store.set_questionnaire(&visit.id, &value).await?;
    let flags = answers.red_flags(&app.config.red_flags);
    app.store
        .audit(&audit_event(
            &app,
            &format!("link:{}", link.id),
            "questionnaire_answered",
            &visit.id,
            Some(flags.join(",")),
        ))
        .await?;
    // Red flags book the patient's follow-ups sooner and tell the clinicians.
    if !flags.is_empty() {
        let raised = crate::urgent::raise_red_flags(&app, &visit.patient_id, &visit.id, None, &flags).await?;
        app.store
            .audit(&audit_event(
                &app,
                "system",
                "red_flags_raised",
                &visit.id,
                Some(format!("{} follow-ups urgent: {}", raised.len(), flags.join(","))),
            ))
            .await?;
    }
    let red_flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    show_answers_to_clinicians(&app, &visit.id, &value, &red_flags);
    if let Some(cluster) = &app.cluster {
        let command = crate::cluster::RoomCommand::QuestionnaireAnswered {
            room: visit.id.clone(),
            questionnaire: value.clone(),
            red_flags,
        };
        cluster.publish(command).await;
    }
    Ok(Json(json!({ "stored": true, "red_flags": flags })))
}

/// A patient already waiting in `room` (on this node) answered the
/// questionnaire: refresh the clinicians' view of them.
pub fn show_answers_to_clinicians(app: &App, room: &str, questionnaire: &serde_json::Value, red_flags: &[String]) {
    for (participant, waited_secs) in app.rooms.waiting(room) {
        if participant.role == Role::Patient {
            app.rooms.send_to_clinicians(
                room,
                &ServerMessage::ParticipantWaiting {
                    participant,
                    waited_secs,
                    questionnaire: Some(questionnaire.clone()),
                    red_flags: red_flags.to_vec(),
                },
            );
        }
    }
}
