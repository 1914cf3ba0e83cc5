-- The charge sweep asks for unsettled charges oldest first: by an index, not a scan of every
-- charge ever made (a drop leaves thousands to settle).
CREATE INDEX sandbox_charges_unsettled ON sandbox_charges (settled, created_at);
