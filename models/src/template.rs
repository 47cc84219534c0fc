//! Conversations and the chat template that turns them into prompt tokens.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::registry::ChatTemplate;
use crate::tokenizer::Tokenizer;

/// Most messages accepted in one conversation.
pub const MAX_MESSAGES: usize = 256;

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The person asking.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// Lowercase name as it appears in the template.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Renders the template as text (for display and tests; generation uses [`encode_chat`]).
pub fn render_chat(
    template: ChatTemplate,
    messages: &[ChatMessage],
    default_system: Option<&str>,
) -> String {
    match template {
        ChatTemplate::ChatMl => {
            let mut s = String::new();
            if let (Some(sys), Some(first)) = (default_system, messages.first())
                && first.role != Role::System
            {
                s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
            }
            for m in messages {
                s.push_str(&format!(
                    "<|im_start|>{}\n{}<|im_end|>\n",
                    m.role.as_str(),
                    m.content
                ));
            }
            s.push_str("<|im_start|>assistant\n");
            s
        }
    }
}

/// Tokenizes a conversation plus the assistant generation prompt.
///
/// Template markers become special tokens; message content is tokenized as plain text, so a
/// user cannot inject `<|im_start|>` and forge a turn. For content without such strings the
/// ids equal those of tokenizing [`render_chat`]'s text with special tokens enabled.
pub fn encode_chat(
    template: ChatTemplate,
    tokenizer: &Tokenizer,
    messages: &[ChatMessage],
    default_system: Option<&str>,
) -> Result<Vec<u32>> {
    if messages.len() > MAX_MESSAGES {
        return Err(crate::ModelsError::Tokenizer(format!(
            "{} messages exceed the limit of {MAX_MESSAGES}",
            messages.len()
        )));
    }
    match template {
        ChatTemplate::ChatMl => {
            let start = special(tokenizer, "<|im_start|>")?;
            let end = special(tokenizer, "<|im_end|>")?;
            let mut ids = Vec::new();
            let turn = |role: &str, content: &str, ids: &mut Vec<u32>| -> Result<()> {
                ids.push(start);
                ids.extend(tokenizer.encode(&format!("{role}\n{content}"), false)?);
                ids.push(end);
                ids.extend(tokenizer.encode("\n", false)?);
                Ok(())
            };
            if let (Some(sys), Some(first)) = (default_system, messages.first())
                && first.role != Role::System
            {
                turn("system", sys, &mut ids)?;
            }
            for m in messages {
                turn(m.role.as_str(), &m.content, &mut ids)?;
            }
            ids.push(start);
            ids.extend(tokenizer.encode("assistant\n", false)?);
            Ok(ids)
        }
    }
}

fn special(tokenizer: &Tokenizer, text: &str) -> Result<u32> {
    tokenizer.special_token(text).ok_or_else(|| {
        crate::ModelsError::Tokenizer(format!("vocabulary lacks the special token {text}"))
    })
}
