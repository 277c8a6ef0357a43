//! The built-in prompt templates (`templateId`), compiled into the binary.

use std::collections::BTreeMap;

use ray_core::RayError;
use ray_core::wire::{Lane, ResponseFormatKind, TemplateValue};

/// A built-in template.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    /// The id requests name, e.g. `email.follow_up.v1`.
    pub id: &'static str,
    /// Its prompt family (metadata `promptFamily`).
    pub family: &'static str,
    /// Its version (metadata `promptTemplateVersion`).
    pub version: &'static str,
    /// The lane it runs in.
    pub lane: Lane,
    /// Variables it needs, in order.
    pub variables: &'static [&'static str],
    /// Default `maxTokens`.
    pub max_tokens: u32,
    /// Default response format.
    pub response_format: ResponseFormatKind,
    /// The system prompt.
    pub system: &'static str,
    /// The user prompt with `{{variable}}` placeholders.
    pub input: &'static str,
}

/// Every built-in template.
pub const TEMPLATES: &[Template] = &[
    Template {
        id: "email.cold_outreach.v1",
        family: "email.cold_outreach",
        version: "v1",
        lane: Lane::Draft,
        variables: &["recipientRole", "topic", "valueProp", "companyContext"],
        max_tokens: 140,
        response_format: ResponseFormatKind::Text,
        system: "You write short, specific B2B cold outreach emails. Write only the email body: \
                 no subject line, no greeting placeholder, no signature. End with one clear call \
                 to action.",
        input: "Draft a short cold outreach email body.\nRecipient role: {{recipientRole}}\n\
                Topic: {{topic}}\nValue proposition: {{valueProp}}\n\
                Company context: {{companyContext}}",
    },
    Template {
        id: "email.follow_up.v1",
        family: "email.follow_up",
        version: "v1",
        lane: Lane::Draft,
        variables: &["previousTopic", "recipientRole", "reasonToReply"],
        max_tokens: 120,
        response_format: ResponseFormatKind::Text,
        system: "You write brief, friendly follow-up emails. Write only the email body: no subject \
                 line, no signature. End with one clear call to action.",
        input: "Draft a short follow-up email body.\nRecipient role: {{recipientRole}}\n\
                Previous topic: {{previousTopic}}\nReason to reply: {{reasonToReply}}",
    },
    Template {
        id: "email.reply_classification.v1",
        family: "email.reply_classification",
        version: "v1",
        lane: Lane::Short,
        variables: &["replyText"],
        max_tokens: 80,
        response_format: ResponseFormatKind::JsonObject,
        system: "You classify replies to sales emails. Return only compact JSON with keys \
                 sentiment, intent, and urgency.",
        input: "Classify this email reply.\nReply: {{replyText}}",
    },
    Template {
        id: "email.reply_rewrite.v1",
        family: "email.reply_rewrite",
        version: "v1",
        lane: Lane::Short,
        variables: &["replyText", "rewriteGoal"],
        max_tokens: 120,
        response_format: ResponseFormatKind::Text,
        system: "You rewrite email replies. Write only the rewritten email body, with no \
                 commentary.",
        input: "Rewrite this email reply.\nGoal: {{rewriteGoal}}\nReply: {{replyText}}",
    },
];

/// Looks a template up by id.
pub fn find(id: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.id == id)
}

/// The template with variable `i` written as `__RAY_PROMPT_VAR_<i>__` (for backends that cache
/// a scaffold of the rendered chat template).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentinels {
    /// The system prompt with placeholders.
    pub system: String,
    /// The input with placeholders.
    pub input: String,
}

/// A template rendered with its variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The system prompt.
    pub system: String,
    /// The user prompt.
    pub input: String,
    /// The variables in the template's order, rendered.
    pub variables: Vec<(String, String)>,
}

impl Template {
    /// The template with placeholders instead of values.
    pub fn sentinels(&self) -> Sentinels {
        let mut input = self.input.to_string();
        for (index, name) in self.variables.iter().enumerate() {
            input = input.replace(&format!("{{{{{name}}}}}"), &ray_models::sentinel(index));
        }
        Sentinels {
            system: self.system.to_string(),
            input,
        }
    }

    /// Renders the template, refusing unknown and missing variables.
    pub fn render(
        &self,
        variables: Option<&BTreeMap<String, TemplateValue>>,
    ) -> Result<Rendered, RayError> {
        let empty = BTreeMap::new();
        let variables = variables.unwrap_or(&empty);
        let unknown: Vec<&str> = variables
            .keys()
            .map(String::as_str)
            .filter(|key| !self.variables.contains(key))
            .collect();
        if !unknown.is_empty() {
            return Err(RayError::invalid_request(format!(
                "templateVariables: unknown variable(s) {} for template {}; it takes {}",
                unknown.join(", "),
                self.id,
                self.variables.join(", ")
            )));
        }
        let missing: Vec<&str> = self
            .variables
            .iter()
            .copied()
            .filter(|name| !variables.contains_key(*name))
            .collect();
        if !missing.is_empty() {
            return Err(RayError::invalid_request(format!(
                "templateVariables: missing variable(s) {} for template {}",
                missing.join(", "),
                self.id
            )));
        }
        let rendered: Vec<(String, String)> = self
            .variables
            .iter()
            .map(|name| {
                let value = variables.get(*name).map(TemplateValue::render);
                ((*name).to_string(), value.unwrap_or_default())
            })
            .collect();
        Ok(Rendered {
            system: self.system.to_string(),
            input: substitute(self.input, &rendered),
            variables: rendered,
        })
    }
}

/// Writes `template` with each `{{name}}` replaced by its value, in one pass over the
/// template: a value is never scanned again, so a value that itself reads `{{topic}}` stays
/// literal text instead of pulling in another variable.
fn substitute(template: &str, values: &[(String, String)]) -> String {
    let extra: usize = values.iter().map(|(_, v)| v.len()).sum();
    let mut out = String::with_capacity(template.len() + extra);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let replaced = after.find("}}").and_then(|close| {
            let name = &after[..close];
            let value = values.iter().find(|(n, _)| n == name)?;
            Some((&value.1, close))
        });
        match replaced {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 2..];
            }
            None => {
                // Not a placeholder here; one may still start at the next brace.
                out.push('{');
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, TemplateValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), TemplateValue::String((*v).to_string())))
            .collect()
    }

    #[test]
    fn renders_every_variable() {
        let template = find("email.cold_outreach.v1").unwrap();
        let rendered = template
            .render(Some(&vars(&[
                ("recipientRole", "CTO"),
                ("topic", "rollouts"),
                ("valueProp", "fewer incidents"),
                ("companyContext", "weekly releases"),
            ])))
            .unwrap();
        assert!(rendered.input.starts_with(
            "Draft a short cold outreach email body.\nRecipient role: CTO\nTopic: rollouts"
        ));
        assert!(!rendered.input.contains("{{"));
    }

    #[test]
    fn unknown_and_missing_variables_are_refused() {
        let template = find("email.reply_classification.v1").unwrap();
        let error = template
            .render(Some(&vars(&[("replyText", "x"), ("tone", "y")])))
            .unwrap_err();
        assert!(error.message().contains("unknown variable(s) tone"));
        let error = template.render(None).unwrap_err();
        assert!(error.message().contains("missing variable(s) replyText"));
    }

    #[test]
    fn values_are_inserted_literally_never_rendered_again() {
        let template = find("email.cold_outreach.v1").unwrap();
        let rendered = template
            .render(Some(&vars(&[
                ("recipientRole", "{{topic}}"),
                ("topic", "rollouts {{companyContext}}"),
                ("valueProp", "{{"),
                ("companyContext", "secret context"),
            ])))
            .unwrap();
        assert!(
            rendered
                .input
                .contains("Recipient role: {{topic}}\nTopic: rollouts {{companyContext}}"),
            "{}",
            rendered.input
        );
        assert!(rendered.input.contains("Value proposition: {{\n"));
        assert_eq!(rendered.input.matches("secret context").count(), 1);
    }

    #[test]
    fn substitution_leaves_unknown_and_unclosed_braces_alone() {
        let values = vec![("a".to_string(), "1".to_string())];
        assert_eq!(substitute("{{a}} {{b}} {{a", &values), "1 {{b}} {{a");
        assert_eq!(substitute("{{{a}}}", &values), "{1}");
        assert_eq!(substitute("", &values), "");
    }

    proptest::proptest! {
        #![proptest_config(crate::fuzz_config(512))]

        #[test]
        fn rendering_any_values_keeps_them_whole(
            values in proptest::collection::vec("(\\{\\{|\\}\\}|[a-zA-Z ]|replyText|rewriteGoal){0,12}", 2),
        ) {
            let template = find("email.reply_rewrite.v1").unwrap();
            let variables = vars(&[("replyText", &values[0]), ("rewriteGoal", &values[1])]);
            let rendered = template.render(Some(&variables)).unwrap();
            let expected = format!(
                "Rewrite this email reply.\nGoal: {}\nReply: {}",
                values[1], values[0]
            );
            proptest::prop_assert_eq!(rendered.input, expected);
        }
    }

    #[test]
    fn every_placeholder_names_a_declared_variable() {
        for template in TEMPLATES {
            let values: BTreeMap<String, TemplateValue> = template
                .variables
                .iter()
                .map(|v| ((*v).to_string(), TemplateValue::Bool(true)))
                .collect();
            let rendered = template.render(Some(&values)).unwrap();
            assert!(!rendered.input.contains("{{"), "{}", template.id);
        }
    }
}
