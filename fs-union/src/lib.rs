//! The union filesystem behind `lhfs`: it pools branch directories into one namespace
//! and decides with mergerfs's create, action and search policies where each
//! operation lands.
