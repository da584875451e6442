//! Chat templates as llama-server renders them: the model's own Jinja template (GGUF
//! `tokenizer.chat_template`) with Hugging Face's settings (`trim_blocks`, `lstrip_blocks`,
//! Python string methods, `raise_exception`, `strftime_now`) and the model's BOS and EOS
//! texts as `bos_token` and `eos_token`. llama.cpp's built-in renderer, which recognises a
//! template by its look and writes it its own way (it leaves out a template's default system
//! message, for one), is the fallback for a template this engine cannot compile.

use llama_cpp_2::model::{LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use minijinja::{Environment, Error, ErrorKind};
use rbee_types::worker::ChatMessage;
use serde::Serialize;

/// A compiled Jinja chat template and the token texts it is given.
pub struct JinjaTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    /// The tokenizer adds BOS (EOS) itself, so a rendered one at the start (end) is cut,
    /// as llama-server does, to not have it twice.
    strip_bos: bool,
    strip_eos: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

impl JinjaTemplate {
    /// Compiles `source`; the error says what the engine could not parse.
    pub fn new(
        source: &str,
        bos: &str,
        eos: &str,
        strip_bos: bool,
        strip_eos: bool,
    ) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source.to_owned())?;
        Ok(JinjaTemplate {
            env,
            bos: bos.to_owned(),
            eos: eos.to_owned(),
            strip_bos,
            strip_eos,
        })
    }

    /// `template` (the model's own, `LlamaModel::chat_template`) compiled with the model's
    /// BOS and EOS texts; `None`, with a warning, when it does not compile, and llama.cpp's
    /// built-in renderer is left to write chat prompts.
    pub fn of_model(model: &LlamaModel, template: &LlamaChatTemplate) -> Option<JinjaTemplate> {
        let source = template.to_str().ok()?;
        let vocab = model.vocab();
        let text = |t: LlamaToken| {
            if t.0 < 0 {
                return String::new(); // the model has no such token
            }
            String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
        };
        match JinjaTemplate::new(
            source,
            &text(vocab.bos()),
            &text(vocab.eos()),
            vocab.should_add_bos(),
            vocab.should_add_eos(),
        ) {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::warn!(error = %e, "the model's chat template does not compile as Jinja; llama.cpp's built-in renderer writes chat prompts instead");
                None
            }
        }
    }

    /// The prompt for `messages`, with the assistant's turn opened when `open_turn`.
    pub fn render(&self, messages: &[ChatMessage], open_turn: bool) -> Result<String, Error> {
        let messages: Vec<Message<'_>> = messages
            .iter()
            .map(|m| Message {
                role: &m.role,
                content: &m.content,
            })
            .collect();
        let out = self.env.get_template("chat")?.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => open_turn,
            bos_token => self.bos,
            eos_token => self.eos,
        })?;
        let mut text = out.as_str();
        if self.strip_bos && !self.bos.is_empty() {
            text = text.strip_prefix(self.bos.as_str()).unwrap_or(text);
        }
        if self.strip_eos && !self.eos.is_empty() {
            text = text.strip_suffix(self.eos.as_str()).unwrap_or(text);
        }
        Ok(text.to_owned())
    }
}

/// `strftime_now(format)`: the local time now, as templates that print today's date ask.
fn strftime_now(format: String) -> Result<String, Error> {
    let bad = || Error::new(ErrorKind::InvalidOperation, "strftime_now: unusable format");
    let format = std::ffi::CString::new(format).map_err(|_| bad())?;
    let mut buf = [0u8; 256];
    // SAFETY: time(NULL) and localtime_r write only into the `tm` given; strftime writes at
    // most buf.len() bytes into buf and returns how many.
    let n = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return Err(bad());
        }
        libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm)
    };
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template, as its GGUF carries it.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn a_template_renders_its_default_system_message_and_the_open_turn() {
        let t = JinjaTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>", false, false).unwrap();
        assert_eq!(
            t.render(&[msg("user", "Hi")], true).unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&[msg("system", "Be brief."), msg("user", "Hi")], false)
                .unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn hugging_face_idioms_work_and_a_template_can_refuse() {
        let src = "{{ bos_token }}{% for m in messages %}\n  {% if m.role == 'user' %}[U] {{ m.content.strip() | upper }}\n  {% elif m.role == 'assistant' %}[A] {{ m['content'] }}{{ eos_token }}\n  {% else %}{{ raise_exception('Only user and assistant roles are supported!') }}\n  {% endif %}\n{% endfor %}";
        let t = JinjaTemplate::new(src, "<s>", "</s>", true, false).unwrap();
        assert_eq!(
            t.render(&[msg("user", "  hi "), msg("assistant", "yo")], true)
                .unwrap(),
            "[U] HI\n[A] yo</s>\n",
            "blocks trimmed as transformers renders them; the BOS the tokenizer adds is cut"
        );
        let e = t.render(&[msg("system", "x")], true).unwrap_err();
        assert!(
            e.to_string()
                .contains("Only user and assistant roles are supported!"),
            "{e}"
        );
    }

    #[test]
    fn a_broken_template_does_not_compile_and_dates_come_from_the_clock() {
        assert!(JinjaTemplate::new("{% for %}", "", "", false, false).is_err());
        let t = JinjaTemplate::new("{{ strftime_now('%Y') }}", "", "", false, false).unwrap();
        let year: i32 = t.render(&[], false).unwrap().parse().unwrap();
        assert!(year >= 2024, "{year}");
    }
}
