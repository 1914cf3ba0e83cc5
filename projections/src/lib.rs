//! openrun projections
