//! Property tests of the OpenAI-compatible request parsers: arbitrary JSON never panics and
//! gives a request or a named error; well-formed conversations translate exactly.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use ray_core::ErrorCode;
use ray_core::wire::TurnRole;
use ray_core::wire::openai::{ChatCompletionRequest, ChatMessage, CompletionRequest};
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("user"),
            Just("system"),
            Just("assistant"),
            Just("tool"),
            Just("text"),
            Just("json_object")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("role".to_string()),
                    Just("content".to_string()),
                    Just("type".to_string()),
                    Just("text".to_string()),
                    Just("messages".to_string()),
                    Just("prompt".to_string()),
                    Just("n".to_string()),
                    Just("stream".to_string()),
                    Just("stream_options".to_string()),
                    Just("max_tokens".to_string()),
                    Just("response_format".to_string()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Raw text, valid JSON or not, never panics the parsers.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        for request in [
            serde_json::from_str::<ChatCompletionRequest>(&text).ok().map(|r| r.to_infer()),
            serde_json::from_str::<CompletionRequest>(&text).ok().map(|r| r.to_infer()),
        ].into_iter().flatten().flatten() {
            let _ = request.validate();
        }
    }

    /// Whatever the body, parsing and translating never panics, and a refusal names what is
    /// wrong with a 4xx code.
    #[test]
    fn arbitrary_bodies_are_translated_or_refused(value in json_value()) {
        if let Ok(chat) = serde_json::from_value::<ChatCompletionRequest>(value.clone())
            && let Err(error) = chat.to_infer()
        {
            prop_assert!(matches!(
                error.code(),
                ErrorCode::InvalidRequest | ErrorCode::UnsupportedParameter
            ));
            prop_assert!(!error.message().is_empty());
        }
        if let Ok(completion) = serde_json::from_value::<CompletionRequest>(value)
            && let Err(error) = completion.to_infer()
        {
            prop_assert!(matches!(
                error.code(),
                ErrorCode::InvalidRequest | ErrorCode::UnsupportedParameter
            ));
        }
    }

    /// A conversation of system messages, then turns ending with the user, becomes the system
    /// prompt, the history and the input, in order and unchanged.
    #[test]
    fn conversations_translate_exactly(
        systems in proptest::collection::vec("[ -~]{1,20}", 0..3),
        turns in proptest::collection::vec(("[ -~]{0,20}", any::<bool>()), 0..8),
        // The last user message is what the model answers: never blank (a blank one is a 400).
        last in "[ -~]{0,19}[!-~]",
    ) {
        let mut messages: Vec<ChatMessage> =
            systems.iter().map(|s| ChatMessage::new("system", s.as_str())).collect();
        for (text, from_user) in &turns {
            messages.push(ChatMessage::new(if *from_user { "user" } else { "assistant" }, text.as_str()));
        }
        messages.push(ChatMessage::new("user", last.as_str()));
        let request = ChatCompletionRequest { messages, ..ChatCompletionRequest::default() };
        let infer = request.to_infer().unwrap();
        prop_assert_eq!(infer.input.as_deref(), Some(last.as_str()));
        let kept: Vec<&String> = systems.iter().filter(|s| !s.trim().is_empty()).collect();
        let expected_system = (!kept.is_empty())
            .then(|| kept.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n\n"));
        prop_assert_eq!(infer.system, expected_system);
        let history = infer.history.unwrap_or_default();
        prop_assert_eq!(history.len(), turns.len());
        for (turn, (text, from_user)) in history.iter().zip(&turns) {
            prop_assert_eq!(&turn.content, text);
            prop_assert_eq!(turn.role, if *from_user { TurnRole::User } else { TurnRole::Assistant });
        }
    }
}
