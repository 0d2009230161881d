"""sleeve_trainer."""
