//! SMTP protocol machines (sans-IO).
