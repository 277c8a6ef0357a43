//! Prompt rendering for llama.cpp: Ray's fallback framings, and template scaffolds (a template
//! rendered once through the model's chat template with placeholders, then reused with the
//! values spliced in).

use ray_core::wire::TurnRole;

use crate::provider::{ProviderRequest, TemplateRef, sentinel};

/// Ray's chat framing, for backends without a usable chat template.
pub(crate) fn ray_chat_fallback(request: &ProviderRequest) -> String {
    let mut prompt = String::new();
    if let Some(system) = &request.system {
        prompt.push_str("System:\n");
        prompt.push_str(system);
        prompt.push_str("\n\n");
    }
    for turn in &request.history {
        prompt.push_str(match turn.role {
            TurnRole::User => "User:\n",
            TurnRole::Assistant => "Assistant:\n",
            TurnRole::Tool => "Tool:\n",
        });
        prompt.push_str(&turn.content);
        for call in turn.tool_calls.iter().flatten() {
            prompt.push_str(&format!(
                "\n{{\"name\": \"{}\", \"arguments\": {}}}",
                call.function.name, call.function.arguments
            ));
        }
        prompt.push_str("\n\n");
    }
    if !request.input.is_empty() {
        prompt.push_str("User:\n");
        prompt.push_str(&request.input);
        prompt.push_str("\n\n");
    }
    prompt.push_str("Assistant:");
    prompt
}

/// The system prompt, the earlier turns and the input, one after the other.
pub(crate) fn plain_completion(request: &ProviderRequest) -> String {
    let mut parts: Vec<&str> = Vec::with_capacity(2 + request.history.len());
    parts.extend(request.system.as_deref());
    parts.extend(request.history.iter().map(|t| t.content.as_str()));
    parts.push(&request.input);
    parts.join("\n\n")
}

/// A rendered template split at its variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scaffold {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Variable(usize),
}

impl Scaffold {
    /// Splits a rendered prompt at the sentinels of `variables` variables. `None` when a
    /// variable is missing (the chat template changed the placeholder), so the caller falls back.
    pub(crate) fn parse(rendered: &str, variables: usize) -> Option<Scaffold> {
        let mut segments = Vec::new();
        let mut seen = vec![false; variables];
        let mut rest = rendered;
        while let Some(start) = rest.find("__RAY_PROMPT_VAR_") {
            let after = &rest[start + "__RAY_PROMPT_VAR_".len()..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let Some(index) = after[..digits].parse::<usize>().ok() else {
                segments.push(Segment::Text(rest[..start + 1].to_string()));
                rest = &rest[start + 1..];
                continue;
            };
            if !after[digits..].starts_with("__") || index >= variables {
                return None;
            }
            if start > 0 {
                segments.push(Segment::Text(rest[..start].to_string()));
            }
            segments.push(Segment::Variable(index));
            seen[index] = true;
            rest = &after[digits + 2..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_string()));
        }
        seen.iter().all(|s| *s).then_some(Scaffold { segments })
    }

    /// The prompt with the template's values spliced in.
    pub(crate) fn render(&self, template: &TemplateRef) -> String {
        let values: Vec<&str> = template.variables.iter().map(|(_, v)| v.as_str()).collect();
        self.render_values(&values)
    }

    /// The prompt with `values[i]` in place of variable `i`.
    pub(crate) fn render_values(&self, values: &[&str]) -> String {
        let extra: usize = values.iter().map(|v| v.len()).sum();
        let mut out = String::with_capacity(extra + 256);
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Variable(index) => {
                    if let Some(value) = values.get(*index) {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }
}

/// Whether the rendered request really is the template with its values (so a scaffold built
/// from the placeholders gives the same prompt). False when the prompt compiler or a trim
/// changed the text.
pub(crate) fn template_matches(request: &ProviderRequest, template: &TemplateRef) -> bool {
    let fill = |text: &str| {
        let mut out = text.to_string();
        for (index, (_, value)) in template.variables.iter().enumerate() {
            out = out.replace(&sentinel(index), value);
        }
        out
    };
    fill(&template.sentinel_input) == request.input
        && Some(fill(&template.sentinel_system)).as_deref() == request.system.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> TemplateRef {
        TemplateRef {
            id: "t".into(),
            variables: vec![("a".into(), "ONE".into()), ("b".into(), "TWO".into())],
            sentinel_system: "sys".into(),
            sentinel_input: format!("x {} y {} z", sentinel(0), sentinel(1)),
        }
    }

    #[test]
    fn scaffolds_split_and_splice() {
        let rendered = format!(
            "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nx {} y {} z<|im_end|>\n",
            sentinel(0),
            sentinel(1)
        );
        let scaffold = Scaffold::parse(&rendered, 2).unwrap();
        assert_eq!(
            scaffold.render(&template()),
            "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nx ONE y TWO z<|im_end|>\n"
        );
    }

    #[test]
    fn a_lost_placeholder_means_no_scaffold() {
        assert!(Scaffold::parse(&format!("only {}", sentinel(0)), 2).is_none());
        assert!(Scaffold::parse(&format!("{} {}", sentinel(0), sentinel(7)), 2).is_none());
        assert!(Scaffold::parse("__RAY_PROMPT_VAR_x and nothing", 0).is_some());
    }

    #[test]
    fn framings() {
        let mut request = ProviderRequest::new("r", "hello", 8);
        assert_eq!(ray_chat_fallback(&request), "User:\nhello\n\nAssistant:");
        assert_eq!(plain_completion(&request), "hello");
        request.system = Some("be brief".into());
        assert_eq!(
            ray_chat_fallback(&request),
            "System:\nbe brief\n\nUser:\nhello\n\nAssistant:"
        );
        assert_eq!(plain_completion(&request), "be brief\n\nhello");
    }

    #[test]
    fn template_match_detects_compiled_prompts() {
        let mut request = ProviderRequest::new("r", "x ONE y TWO z", 8);
        request.system = Some("sys".into());
        assert!(template_matches(&request, &template()));
        request.input = "x ONE y TWO".into();
        assert!(!template_matches(&request, &template()));
    }
}
