-- Argo CD health check for every kind of customers.partnerops.io (Customer,
-- CustomerMembership, CustomerMessage, CustomerQuota, MessageAcknowledgement).
-- It reads the same conditions kstatus (Flux) and `kubectl wait` read:
--   Degraded     Stalled=True, or Ready=False with a terminal reason
--   Progressing  not yet reconciled, generation ahead of observedGeneration,
--                Reconciling=True, or being deleted
--   Healthy      Ready=True for the current generation
-- The message is always the deciding condition's message.
local terminal = {
  CustomerNotFound = true,
  CustomerDeleting = true,
  MessageNotFound = true,
  Duplicate = true,
}

local hs = { status = "Progressing", message = "Waiting for the operator to reconcile" }

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end

local conditions = {}
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    conditions[c.type] = c
  end
end

-- current is true when a condition was written for this generation.
local function current(c)
  return c.observedGeneration == nil or c.observedGeneration >= generation
end

local stalled = conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" and current(stalled) then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Being deleted"
  local ready = conditions["Ready"]
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    hs.message = ready.message
  end
  return hs
end

local observed = 0
if obj.status ~= nil and obj.status.observedGeneration ~= nil then
  observed = obj.status.observedGeneration
end
local ready = conditions["Ready"]
if ready == nil or observed < generation or not current(ready) then
  hs.message = "Waiting for the operator to reconcile generation " .. tostring(generation)
  return hs
end

local reconciling = conditions["Reconciling"]
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = reconciling.message
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end

if ready.status == "False" and terminal[ready.reason] then
  hs.status = "Degraded"
end
hs.message = ready.message
return hs
