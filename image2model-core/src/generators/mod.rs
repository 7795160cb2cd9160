//! The model generators: [`relief`] (offline, built in) and [`fal`] (FAL.AI).

pub mod fal;
pub mod relief;
