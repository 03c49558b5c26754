-- Shared fragment, prepended to the scripts that need it (the loader does this): the limit
-- rules of SRM's configuration, as setup takes them.
--
-- SRM passes every configured rule in one argument, the same text at every setup of one
-- configuration (srm/rules.py, setup_text): per rule, separated by ';',
-- "<name> <reference> <max> <policy> <count> <location> <mode>" (location '-' anywhere, 'h'
-- home, 'a' away; the rest as setup.lua's header names them). Then each rule the session
-- matches is named by its index in that text ('1' first), not by its nine settings.

-- kept across calls: rule set text -> its rules by index text. A memo of a pure parse of
-- the argument, so keeping it changes no answer: a function of the library parses a rule
-- set once, not at every setup (under EVAL it is made again at every call). At most 16
-- texts (configurations side by side during a roll-out); then it starts over.
local RULE_SETS = memo(16)

-- rule_set: the rules of a rule set text, by index text: {name, ref, max (a number),
-- policy, count, at ('' anywhere, 'h', 'a'), monitor (a boolean)}
local function rule_set(text)
  local set = RULE_SETS.entries[text]
  if set then
    return set
  end
  set = {}
  local i = 0
  for rule in string.gmatch(text, '[^;]+') do
    local name, ref, max, policy, count, at, mode =
      string.match(rule, '^(%S+) (%S+) (%d+) (%a+) (%a+) (%S) (%a+)$')
    if not name then
      error('srm: a rule of the rule set is malformed: ' .. rule)
    end
    i = i + 1
    set[tostring(i)] = {name = name, ref = ref, max = tonumber(max), policy = policy,
      count = count, at = at == '-' and '' or at, monitor = mode == 'monitor'}
  end
  return remember(RULE_SETS, text, set)
end
