-- figures_test.sh's experiment (tests/experiment/upstream.cfg, the tiny test model): --set
-- case=NAME picks what it does. The misspelt cases must fail at their own line, with the
-- field and a suggestion; "ok" makes the ready-made figures with each score variant and
-- checks their titles and labels name the score, and that token labels are legible.
local upstream = require "upstream"
local core = require "upstream.core"
local figures = require "upstream.figures"

local X = upstream.experiment {name = "figures", direction = "means",
  prompts = {harmful = {"How do I build a bomb?", "How can I steal a car?"},
             harmless = {"How do I bake a cake?", "How can I plant tomatoes?"}},
  params = {case = "ok"}}
local case = X.params.case
local function check(cond, fmt, ...) if not cond then error(fmt:format(...), 0) end end

if case == "matrix_key" then
  X:figure("matrix", {name = "m", values = {{1, 0.5}, {0.5, 1}}, row_label = {"a", "b"}}) -- line 17
elseif case == "lines_key" then
  X:figure("lines", {name = "l", series = {{name = "a", y = {1, 2}, colour = "red"}}}) -- line 19
end

local a = X:attribute {prompt = "How do I bake a cake?", score_positions = "instruction"}
if case == "tokens_key" then X:plot_tokens(a, 2, {tokns = "instruction"}) end -- line 23
local s = X:steer {attribution = a, latents = a:top_latents(1), alphas = {-1, 0, 1}, controls = 0}
if case == "dose_key" then X:plot_dose(s, {metirc = "score"}) end -- line 25
if case == "ranking_key" then X:plot_ranking(a, 2, {nmae = "r"}) end -- line 26

-- Titles and labels name the attribution's score.
local function text(path) return core.plot.info(path).text end
for _, score in ipairs {"gradient", "cosine", "activation"} do
  local b = X:attribute {prompt = "How can I plant tomatoes?", score = score}
  local t = text(X:plot_ranking(b, 3)).Title
  check(t:find(({gradient = "refusal gradient", cosine = "cosine", activation = "activation"})[score], 1, true),
        "ranking title for score %s: %s", score, t)
  if score ~= "gradient" then check(not t:find("ranked by the refusal gradient", 1, true), "title %s", t) end
  X:plot_tokens(b, 2)
end
-- The whole-prompt heatmap with only the instruction scored: the instruction's columns set the
-- colour range and are bracketed (what plot_tokens hands upstream.plot.heatmap), template
-- tokens keep their names.
local heatmap, spec = core.plot.heatmap, nil
core.plot.heatmap = function(t) spec = t; return heatmap(t) end
local p1 = X:plot_tokens(a, 2)
core.plot.heatmap = heatmap
local included = {}
for t = 1, #a.ids do if a.include[t] then included[#included + 1] = t end end
check(#included > 0 and #included < #a.ids - 5, "score_positions = instruction: %d of %d tokens", #included, #a.ids)
check(table.concat(spec.marked_columns, ",") == table.concat(included, ","), "marked %s, scored %s",
      table.concat(spec.marked_columns, ","), table.concat(included, ","))
check(table.concat(spec.scale_columns, ",") == table.concat(included, ","), "scale columns %s",
      table.concat(spec.scale_columns, ","))
check(spec.col_labels[2] == "<start_of_turn>" and spec.col_labels[#a.ids] == "↵", "labels %s ... %s",
      spec.col_labels[2], spec.col_labels[#a.ids])
check(spec.mark_label:find(("%d tokens"):format(#included), 1, true), "mark label %s", spec.mark_label)
local p2 = X:plot_tokens(a, 2, {tokens = "instruction"})
check(p1:match("tokens_p%d+_L%d+%.png$") and p2:match("tokens_instruction_p%d+_L%d+%.png$"), "names %s %s", p1, p2)
-- Token labels a reader can see.
check(figures.token_label("▁") == "␣" and figures.token_label("  ") == "␣␣", "space token: %s", figures.token_label("▁"))
check(figures.token_label("\n") == "↵" and figures.token_label("<0x0A>") == "↵", "newline token")
check(figures.token_label("<start_of_turn>") == "<start_of_turn>", "special token shortened")
check(figures.token_label("<0x48>") == "H" and figures.token_label("<0x20>") == "␣" and figures.token_label("<0xE2>") == "<0xE2>", "byte tokens")
check(figures.token_label("▁How") == " How", "word token: %s", figures.token_label("▁How"))
X:plot_dose(s, {metric = "p_refusal"})
X:finish()
