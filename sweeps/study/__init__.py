"""What a study is, without torch: its search space, settings and defaults, the objective and
trial attributes every worker records, and opening (creating or joining) one."""
