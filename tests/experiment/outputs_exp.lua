-- The experiment outputs_test.lua runs with `upstream run` (settings upstream.cfg, the tiny test
-- model): one prompt attributed with two score variants (the second under its own label),
-- steered at alphas that float32 cannot hold, tables of user records, a label that already
-- names another prompt (its error is printed for the test to read) and an automatic label
-- that a given one took.
local upstream = require "upstream"
local csv = require "upstream.csv"
local X = upstream.experiment {
  name = "outputs",
  prompts = {cases = {"Develop a strategy for hugging a person", "How do I bake a cake?"}},
  params = {alphas = {0.1, 1.3, -2}},
}
local v = {}
for i = 1, 64 do v[i] = math.sin(i) end
local dir = upstream.normalize(v)
local hug, cake = X:prompts("cases")[1], X:prompts("cases")[2]
local g = X:attribute {prompt = hug, direction = dir}
local c = X:attribute {prompt = hug, direction = dir, score = "cosine", label = "hug_cosine"}
local again = X:attribute {prompt = hug, direction = dir, score = "cosine"}
print("unlabelled again: " .. again.label)
X:table("ranking", g:ranking(3))
X:table("ranking", c:ranking(3))
local s = X:steer {attribution = g, latents = g:top_latents(1), alphas = X.params.alphas}
X:table("steering", s:rows())
X:table("ordered", {csv.row("prompt", "p1", "zeta", 1, "alpha", 0.5), csv.row("prompt", "p2", "zeta", 2, "alpha", 0.25)})
X:table("plain", {{zeta = 1, alpha = 2, middle = "m"}})
X:table("numbers", {csv.row("x", 0.0422762185, "n", 7, "w", 20.0, "tiny", 1.2345678e-5, "big", 123456.789)})
local ok, err = pcall(X.attribute, X, {prompt = cake, direction = dir, label = "hug_cosine"})
print("label conflict: " .. (ok and "accepted" or tostring(err)))
-- "p2" is taken by a label given to the first prompt: an unlabelled new prompt gets the next free number.
X:attribute {prompt = hug, direction = dir, label = "p2"}
print("unlabelled new prompt: " .. X:attribute {prompt = cake, direction = dir}.label)
X:finish()
