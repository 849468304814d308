/* commands.h — barlowd's subcommands; each takes the arguments after its name and returns the
 * process exit code (0 ok, 1 failure, 2 bad input). */
#ifndef COMMANDS_H
#define COMMANDS_H

int cmd_step(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_bench_step(int argc, char **argv);
int cmd_bench_fma(int argc, char **argv);
int cmd_bench_comm(int argc, char **argv);
int cmd_bench_search(int argc, char **argv);
int cmd_bench_filter(int argc, char **argv);
int cmd_bench_ingest(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_train_rank(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_health(int argc, char **argv);
int cmd_upload(int argc, char **argv);
int cmd_search(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_restore(int argc, char **argv);

#endif
