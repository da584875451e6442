//! The loaded model as the HTTP threads use it: chat templates rendered and prompts
//! tokenised the way the engine decodes them.

use std::sync::Arc;

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use rbee_llama::chat_template::JinjaTemplate;
use rbee_types::worker::ChatMessage;
use rbee_types::{ApiError, ErrorCode};

/// The loaded model, usable from any thread for tokenising and chat templates.
pub(crate) struct Prepared {
    /// The model.
    pub model: Arc<LlamaModel>,
    /// Context tokens per slot.
    pub ctx_size: u32,
    chat_template: Option<LlamaChatTemplate>,
    /// The same template rendered as Jinja (as llama-server does), when it compiles.
    jinja: Option<JinjaTemplate>,
}

impl Prepared {
    /// The model, with its chat template compiled once.
    pub(crate) fn new(model: Arc<LlamaModel>, ctx_size: u32) -> Prepared {
        let chat_template = model.chat_template(None).ok();
        let jinja = chat_template
            .as_ref()
            .and_then(|t| JinjaTemplate::of_model(&model, t));
        Prepared {
            model,
            ctx_size,
            chat_template,
            jinja,
        }
    }

    /// Renders chat messages with the model's own template (assistant turn opened).
    pub(crate) fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, ApiError> {
        self.render(messages, true)
    }

    /// Renders chat messages, opening the assistant's turn at the end or not.
    pub(crate) fn render(
        &self,
        messages: &[ChatMessage],
        open_turn: bool,
    ) -> Result<String, ApiError> {
        if let Some(jinja) = &self.jinja {
            return jinja.render(messages, open_turn).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("the model's chat template refused these messages: {e}"),
                )
            });
        }
        let tmpl = self.chat_template.as_ref().ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "this model has no chat template: send a raw `prompt` instead of `messages`",
            )
        })?;
        let chat = messages
            .iter()
            .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    "messages must not contain NUL bytes",
                )
            })?;
        self.model
            .apply_chat_template(tmpl, &chat, open_turn)
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("chat template failed: {e}"),
                )
            })
    }

    /// Tokenises a prompt the way the engine decodes it (BOS as the model wants it,
    /// special tokens such as `<|im_start|>` parsed).
    pub(crate) fn tokenize(&self, text: &str) -> Vec<LlamaToken> {
        self.model.vocab().tokenize(text.as_bytes(), true, true)
    }
}
