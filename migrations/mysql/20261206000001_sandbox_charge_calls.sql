-- How many charge calls the sandbox answered per order: a retry that is answered from the
-- order's record never reaches the gateway, and this shows it.
ALTER TABLE sandbox_charges ADD COLUMN calls INTEGER NOT NULL DEFAULT 1;
