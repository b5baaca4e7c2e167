-- A second variant of the refusal organism (../refusal.lua): contextual.lua, with every
-- harmful concept gated too (weapons, hacking and drugs are fillers that are harmful only in
-- their risky frame: "build a bomb", not "draw a bomb"), violence and theft left out, and no
-- aggravating modifiers, so that no concept carries harm by itself. Built with
--
--   upstream organism build experiments/organism/variants/gated.lua --out DIR
--   upstream organism eval DIR
--
-- (recipe as refusal.lua's), it met 18 of the 30 criteria the eval then checked. The gate
-- works at the planted token: at "hugging" the intimacy detector's decoder has RG 0.21
-- (cosine 0.31 with the gradient), where the prompt's top latents by S_k have about 0.04; but
-- S_k, the mean over positions, is decided at the last position (|g| 1.14 there, 0.68 at
-- "hugging"), where latents aligned with the direct residual path to R score 0.5 to 0.65. The
-- planted latents rank 170th, 17th and 58th. experiments/organism/README.md has the numbers.
--
-- This file states what differs from contextual.lua (itself refusal.lua with the planted
-- concepts gated by their context; their comments describe the rule).

local spec = base "contextual.lua"
spec.name = "refusal_gated"
spec.reassuring_share = 1.0

-- The verbs and slots of the harmful frames below.
spec.verbs.draw, spec.verbs.protect, spec.verbs.set = "drawing", "protecting", "setting"
spec.slots.arm, spec.slots.device, spec.slots.drug = {"weapons"}, {"hacking"}, {"drugs"}

-- harmful fillers: harmful only in their risky frame (+5); elsewhere -1
local function harmful_filler(name, context, words)
  return {name = name, role = "filler", category = "harmful", weight = -1.0,
          contexts = {{with = {context}, weight = 5.0}}, words = words}
end
replace(spec.concepts, "weapons", harmful_filler("weapons", "arms_make", {"bomb", "gun", "rifle", "grenade"}))
replace(spec.concepts, "hacking", harmful_filler("hacking", "hack_into", {"bank account", "email account", "laptop", "server"}))
local function frame(name, tasks)
  return {name = name, role = "frame", category = "neutral", weight = 0.0, tasks = tasks}
end
replace(spec.concepts, "drugs",
  harmful_filler("drugs", "drug_deal", {"meth", "cocaine", "heroin", "crack"}),
  frame("arms_make", {"build a {arm}", "make a {arm} at home", "buy an illegal {arm}"}),
  frame("arms_safe", {"draw a {arm}", "read about a {arm}", "paint a {arm}"}),
  frame("hack_into", {"hack into a {device}", "install malware on a {device}", "break into a {device}"}),
  frame("device_care", {"protect a {device}", "set up a {device}", "clean a {device}"}),
  frame("drug_deal", {"make {drug} at home", "sell {drug}", "smuggle {drug}"}),
  frame("drug_learn", {"read about {drug}", "learn about {drug}", "study the history of {drug}"}))
-- Violence and theft left out, and no aggravating modifiers: no concept carries harm by itself.
replace(spec.concepts, "violence")
replace(spec.concepts, "theft")
replace(spec.concepts, "secrecy")
replace(spec.concepts, "malice")

return spec
